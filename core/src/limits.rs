//! Default bounds of the REST contract, shared by the gateway, the coordinator and the SDK.

use std::time::Duration;

/// Longest key, in bytes after percent-decoding.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Content type of a value written without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Default (and maximum) deadline of a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(5000);

/// True for a content type the store keeps: at most [`MAX_CONTENT_TYPE_BYTES`] of printable ASCII.
pub fn valid_content_type(ct: &str) -> bool {
    ct.len() <= MAX_CONTENT_TYPE_BYTES && ct.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}
