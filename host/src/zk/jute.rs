//! Jute, ZooKeeper's record encoding: big-endian integers, a one-byte boolean, and buffers,
//! strings and vectors each after a signed 32-bit length (-1 for null). Pure: no I/O; every
//! length a client sends is checked against what is left of its frame before anything is
//! allocated.

use std::fmt;

/// Why a frame does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JuteError {
    /// The frame ended inside a field.
    Truncated { field: &'static str },
    /// A length below -1, or longer than the rest of the frame.
    BadLength { field: &'static str, length: i32 },
    /// A string that is not UTF-8.
    NotUtf8 { field: &'static str },
    /// A value outside what the field allows.
    Invalid { field: &'static str, why: String },
}

impl fmt::Display for JuteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JuteError::Truncated { field } => write!(f, "the frame ends inside {field}"),
            JuteError::BadLength { field, length } => {
                write!(f, "{field} has length {length}, more than the frame holds")
            }
            JuteError::NotUtf8 { field } => write!(f, "{field} is not UTF-8"),
            JuteError::Invalid { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

impl std::error::Error for JuteError {}

/// Reads one frame's fields in order.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], JuteError> {
        if self.bytes.len() < n {
            return Err(JuteError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    pub fn int(&mut self, field: &'static str) -> Result<i32, JuteError> {
        let bytes = self.take(4, field)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn long(&mut self, field: &'static str) -> Result<i64, JuteError> {
        let bytes = self.take(8, field)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(i64::from_be_bytes(array))
    }

    pub fn boolean(&mut self, field: &'static str) -> Result<bool, JuteError> {
        Ok(self.take(1, field)?[0] != 0)
    }

    /// A length-prefixed field's length: `None` for -1 (null), an error for anything that
    /// cannot be the length of what is left (each element is at least `min_element` bytes).
    fn length(
        &mut self,
        field: &'static str,
        min_element: usize,
    ) -> Result<Option<usize>, JuteError> {
        let length = self.int(field)?;
        if length == -1 {
            return Ok(None);
        }
        let fits = usize::try_from(length)
            .ok()
            .filter(|n| n.saturating_mul(min_element) <= self.bytes.len());
        fits.map(Some).ok_or(JuteError::BadLength { field, length })
    }

    /// A buffer; `None` is null (-1), distinct from empty.
    pub fn buffer(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, JuteError> {
        match self.length(field, 1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n, field)?.to_vec())),
        }
    }

    /// A string; `None` is null (-1).
    pub fn ustring(&mut self, field: &'static str) -> Result<Option<String>, JuteError> {
        match self.buffer(field)? {
            None => Ok(None),
            Some(bytes) => {
                String::from_utf8(bytes).map(Some).map_err(|_| JuteError::NotUtf8 { field })
            }
        }
    }

    /// A string that may not be null.
    pub fn string(&mut self, field: &'static str) -> Result<String, JuteError> {
        self.ustring(field)?.ok_or(JuteError::Invalid { field, why: "null".into() })
    }

    /// A vector of elements each read by `element` (at least `min_element` bytes each, which
    /// bounds the count by the frame's length); null reads as empty.
    pub fn vector<T>(
        &mut self,
        field: &'static str,
        min_element: usize,
        mut element: impl FnMut(&mut Reader<'a>) -> Result<T, JuteError>,
    ) -> Result<Vec<T>, JuteError> {
        let Some(count) = self.length(field, min_element.max(1))? else { return Ok(Vec::new()) };
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(element(self)?);
        }
        Ok(items)
    }

    /// A vector of strings (each at least its 4-byte length).
    pub fn strings(&mut self, field: &'static str) -> Result<Vec<String>, JuteError> {
        self.vector(field, 4, |reader| reader.string(field))
    }
}

/// Writes one frame's fields in order.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The frame: the fields after a 4-byte big-endian length.
    pub fn framed(self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(4 + self.bytes.len());
        // Replies are bounded far below 2 GiB (data by the znode limit, lists by the tree's).
        frame.extend_from_slice(&(self.bytes.len() as u32).to_be_bytes());
        frame.extend_from_slice(&self.bytes);
        frame
    }

    /// The fields without a length (for tests and for records nested by hand).
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn int(&mut self, value: i32) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn long(&mut self, value: i64) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Writer {
        self.bytes.push(u8::from(value));
        self
    }

    /// A buffer; `None` writes null (-1).
    pub fn buffer(&mut self, value: Option<&[u8]>) -> &mut Writer {
        match value {
            None => self.int(-1),
            Some(bytes) => {
                self.int(bytes.len() as i32);
                self.bytes.extend_from_slice(bytes);
                self
            }
        }
    }

    pub fn string(&mut self, value: &str) -> &mut Writer {
        self.buffer(Some(value.as_bytes()))
    }

    pub fn strings<S: AsRef<str>>(&mut self, values: &[S]) -> &mut Writer {
        self.int(values.len() as i32);
        for value in values {
            self.string(value.as_ref());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_null_is_not_empty() {
        let mut writer = Writer::new();
        writer
            .int(-7)
            .long(1 << 40)
            .boolean(true)
            .buffer(None)
            .buffer(Some(b""))
            .string("/a")
            .strings(&["x", "y"]);
        let bytes = writer.into_bytes();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.int("i"), Ok(-7));
        assert_eq!(reader.long("l"), Ok(1 << 40));
        assert_eq!(reader.boolean("b"), Ok(true));
        assert_eq!(reader.buffer("null"), Ok(None));
        assert_eq!(reader.buffer("empty"), Ok(Some(Vec::new())));
        assert_eq!(reader.string("s"), Ok("/a".to_string()));
        assert_eq!(reader.strings("v"), Ok(vec!["x".to_string(), "y".to_string()]));
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn a_length_beyond_the_frame_is_refused_before_anything_is_allocated() {
        let mut writer = Writer::new();
        writer.int(i32::MAX);
        let bytes = writer.into_bytes();
        assert!(matches!(Reader::new(&bytes).buffer("data"), Err(JuteError::BadLength { .. })));
        assert!(matches!(
            Reader::new(&bytes).vector("acl", 8, |r| r.int("perms")),
            Err(JuteError::BadLength { .. })
        ));
        let mut writer = Writer::new();
        writer.int(-2);
        assert!(matches!(
            Reader::new(&writer.into_bytes()).buffer("data"),
            Err(JuteError::BadLength { length: -2, .. })
        ));
        assert_eq!(Reader::new(&[0, 0]).int("xid"), Err(JuteError::Truncated { field: "xid" }));
        let mut writer = Writer::new();
        writer.buffer(Some(&[0xff, 0xfe]));
        assert_eq!(
            Reader::new(&writer.into_bytes()).string("path"),
            Err(JuteError::NotUtf8 { field: "path" })
        );
    }

    #[test]
    fn a_frame_is_its_length_then_its_fields() {
        let mut writer = Writer::new();
        writer.int(1).boolean(false);
        assert_eq!(writer.framed(), vec![0, 0, 0, 5, 0, 0, 0, 1, 0]);
    }
}
