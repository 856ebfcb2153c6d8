//! AMF0 (Action Message Format 0): the encoding of RTMP command messages (`connect`,
//! `publish`, …) and of metadata (`onMetaData`). Decoding is bounded: nesting is limited, every
//! length is checked against the bytes actually present, and one message decodes to at most a
//! given number of values ([`decode_all_bounded`]; [`MAX_VALUES`] by default): a value takes one
//! byte on the wire but tens in memory, so without a count a message of a few MB could expand to
//! hundreds. Hostile input costs at most its own size plus a fixed amount.

use crate::{ParseError, Result};

/// Deepest nesting of objects and arrays accepted.
const MAX_DEPTH: usize = 16;
/// Most values (and object properties) one message decodes to by default. Commands hold about
/// ten, `onMetaData` a few dozen.
pub const MAX_VALUES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// An object or an ECMA array: ordered properties.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    StrictArray(Vec<Value>),
    Date(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    /// A property of an object (or ECMA array).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(properties) => properties.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn object<const N: usize>(properties: [(&str, Value); N]) -> Value {
        Value::Object(properties.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
    pub fn string(text: &str) -> Value {
        Value::String(text.to_owned())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// Values that may still be decoded.
    budget: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(ParseError::new("AMF0: truncated value"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn utf8(&mut self, len: usize) -> Result<String> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
    fn short_string(&mut self) -> Result<String> {
        let len = self.u16()? as usize;
        self.utf8(len)
    }

    /// Properties up to the object-end marker (0x00 0x00 0x09).
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>> {
        let mut properties = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.bytes.first() == Some(&0x09) {
                self.take(1)?;
                return Ok(properties);
            }
            let value = self.value(depth + 1)?;
            properties.push((key, value));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(ParseError::new("AMF0: nesting too deep"));
        }
        self.budget = self.budget.checked_sub(1).ok_or_else(|| ParseError::new("AMF0: too many values"))?;
        Ok(match self.u8()? {
            0x00 => Value::Number(self.f64()?),
            0x01 => Value::Boolean(self.u8()? != 0),
            0x02 => Value::String(self.short_string()?),
            0x03 => Value::Object(self.properties(depth)?),
            0x05 => Value::Null,
            0x06 => Value::Undefined,
            0x08 => {
                let _count_hint = self.u32()?;
                Value::Object(self.properties(depth)?)
            }
            0x0a => {
                let count = self.u32()? as usize;
                // Every element takes at least one byte: a count beyond the input is a lie.
                if count > self.bytes.len() {
                    return Err(ParseError::new("AMF0: strict array longer than its message"));
                }
                let mut items = Vec::with_capacity(count.min(self.budget));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            0x0b => {
                let millis = self.f64()?;
                self.take(2)?;
                Value::Date(millis)
            }
            0x0c => {
                let len = self.u32()? as usize;
                Value::String(self.utf8(len)?)
            }
            marker => return Err(ParseError::new(format!("AMF0: unsupported type marker 0x{marker:02x}"))),
        })
    }
}

/// Decodes every value in `bytes` (a command message is a sequence of values), at most
/// [`MAX_VALUES`] of them.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Value>> {
    decode_all_bounded(bytes, MAX_VALUES)
}

/// Decodes every value in `bytes`, refusing input that holds more than `max_values` values
/// (nested ones and object properties included).
pub fn decode_all_bounded(bytes: &[u8], max_values: usize) -> Result<Vec<Value>> {
    let mut reader = Reader { bytes, budget: max_values };
    let mut values = Vec::new();
    while !reader.bytes.is_empty() {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

fn encode_short_string(text: &str, out: &mut Vec<u8>) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Value::String(s) if s.len() <= u16::MAX as usize => {
            out.push(0x02);
            encode_short_string(s, out);
        }
        Value::String(s) => {
            out.push(0x0c);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Object(properties) => {
            out.push(0x03);
            for (key, value) in properties {
                encode_short_string(key, out);
                encode(value, out);
            }
            out.extend_from_slice(&[0x00, 0x00, 0x09]);
        }
        Value::Null => out.push(0x05),
        Value::Undefined => out.push(0x06),
        Value::StrictArray(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::Date(millis) => {
            out.push(0x0b);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Value::string("connect"),
            Value::Number(1.0),
            Value::object([("app", Value::string("app")), ("flashVer", Value::string("FMLE/3.0")), ("x", Value::Null)]),
            Value::StrictArray(vec![Value::Boolean(true), Value::Undefined]),
            Value::Date(5.0),
        ];
        assert_eq!(decode_all(&encode_all(&values)).unwrap(), values);
    }

    #[test]
    fn ecma_array_reads_as_object() {
        // onMetaData as ffmpeg writes it: an ECMA array.
        let mut bytes = vec![0x02, 0x00, 0x0a];
        bytes.extend_from_slice(b"onMetaData");
        bytes.extend_from_slice(&[0x08, 0, 0, 0, 1, 0x00, 0x05]);
        bytes.extend_from_slice(b"width");
        bytes.push(0x00);
        bytes.extend_from_slice(&1280f64.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 9]);
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values[1].get("width").and_then(Value::as_f64), Some(1280.0));
    }

    #[test]
    fn hostile_input_is_refused_not_trusted() {
        assert!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_all(&[0x0c, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
        assert!(decode_all(&[0x02, 0x00]).is_err());
        assert!(decode_all(&[0x03; 64]).is_err());
        assert!(decode_all(&[0x11]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x03, 0x00, 0x01, b'a'], 40).flatten().collect();
        assert!(decode_all(&deep).is_err());
        // A strict array of a million nulls (one byte each on the wire) is refused at the value
        // limit instead of becoming 32 MB of values.
        let mut many = vec![0x0a];
        many.extend_from_slice(&1_000_000u32.to_be_bytes());
        many.extend(std::iter::repeat_n(0x05, 1_000_000));
        assert!(decode_all(&many).is_err());
        let mut enough = vec![0x0a];
        enough.extend_from_slice(&((MAX_VALUES - 1) as u32).to_be_bytes());
        enough.extend(std::iter::repeat_n(0x05, MAX_VALUES - 1));
        assert!(decode_all(&enough).is_ok());
    }
}
