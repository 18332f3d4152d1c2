//! SQLite implementation (to be written).
