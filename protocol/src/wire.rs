//! The framing of a D-Bus message on a stream, as far as both ends of the
//! login socket need it before handing the bytes to zbus: how long a
//! message is, read from its fixed 16-byte primary header, so that each
//! side reads exactly one message and refuses one over its size bounds
//! before allocating for it.

/// The fixed part of a message's header: byte order, type, flags,
/// version, body length, serial, and the length of the header fields.
pub const PRIMARY_HEADER: usize = 16;

/// Why a primary header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte is no D-Bus byte order mark.
    NotDBus,
    /// The body or the header fields are over the reader's bounds.
    TooLarge,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotDBus => "not a D-Bus message",
            Self::TooLarge => "a D-Bus message over the size bounds",
        })
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The whole length of the message that primary header `h` opens, header
/// padding included, if its header fields are at most `max_fields` bytes
/// and its body at most `max_body`.
pub fn message_len(
    h: &[u8; PRIMARY_HEADER],
    max_fields: u32,
    max_body: u32,
) -> Result<usize, FrameError> {
    let little = match h[0] {
        b'l' => true,
        b'B' => false,
        _ => return Err(FrameError::NotDBus),
    };
    let at = |i: usize| {
        let b = [h[i], h[i + 1], h[i + 2], h[i + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let (body, fields) = (at(4), at(12));
    if body > max_body || fields > max_fields {
        return Err(FrameError::TooLarge);
    }
    let header = (PRIMARY_HEADER + fields as usize).next_multiple_of(8);
    Ok(header + body as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endian: u8, body: u32, fields: u32) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0] = endian;
        h[1] = 1;
        let (b, f) = if endian == b'l' {
            (body.to_le_bytes(), fields.to_le_bytes())
        } else {
            (body.to_be_bytes(), fields.to_be_bytes())
        };
        h[4..8].copy_from_slice(&b);
        h[12..16].copy_from_slice(&f);
        h
    }

    #[test]
    fn a_message_length_is_read_in_either_byte_order() {
        // 16 + 61 fields = 77, padded to 80, + 20 body.
        assert_eq!(message_len(&header(b'l', 20, 61), 100, 100), Ok(100));
        assert_eq!(message_len(&header(b'B', 20, 61), 100, 100), Ok(100));
        assert_eq!(message_len(&header(b'l', 0, 0), 100, 100), Ok(16));
    }

    #[test]
    fn a_message_over_the_bounds_is_refused_before_it_is_read() {
        let (fields, body) = (4096, 32 * 1024);
        assert!(message_len(&header(b'l', body, 100), fields, body).is_ok());
        let over = message_len(&header(b'l', body + 1, 100), fields, body);
        assert_eq!(over, Err(FrameError::TooLarge));
        let huge = message_len(&header(b'B', 128 << 20, 100), fields, body);
        assert_eq!(huge, Err(FrameError::TooLarge));
        let many_fields = message_len(&header(b'l', 10, fields + 1), fields, body);
        assert_eq!(many_fields, Err(FrameError::TooLarge));
        let not_dbus = message_len(&header(b'x', 10, 10), fields, body);
        assert_eq!(not_dbus, Err(FrameError::NotDBus));
    }
}
