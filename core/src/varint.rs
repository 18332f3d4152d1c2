//! LEB128 unsigned varints, the integer encoding of every compact pairdb format.

/// Appends `v` as an unsigned LEB128 varint (1–10 bytes).
pub fn put(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a varint from the front of `buf`, advancing it. `None` if `buf` ends early or the
/// encoding overflows 64 bits.
pub fn take(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Reads `n` bytes from the front of `buf`, advancing it; `None` if fewer remain.
pub fn take_bytes<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            let mut s = buf.as_slice();
            assert_eq!(take(&mut s), Some(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut s: &[u8] = &[0x80];
        assert_eq!(take(&mut s), None);
        let mut s: &[u8] = &[0xff; 11];
        assert_eq!(take(&mut s), None);
    }
}
