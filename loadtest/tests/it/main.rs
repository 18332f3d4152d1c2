//! The load tester against servers whose behaviour the tests control.

mod omission;
