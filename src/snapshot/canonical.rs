//! Canonical protobuf encoding: map entries sorted by key, recursively,
//! through nested messages and `Any`. Everything else stays as prost wrote
//! it (prost emits fields in a fixed order; only `HashMap` iteration varies).

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost_reflect::{Kind, MessageDescriptor};

use crate::descriptors;

/// Re-encode `bytes` (a message of type `md`) with map entries sorted.
/// Malformed input is returned unchanged.
#[must_use]
pub(crate) fn canonicalize(md: &MessageDescriptor, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    if canon_into(md, bytes, &mut out).is_err() {
        return bytes.to_vec();
    }
    out
}

/// Insert `fields` (encoded fields, key and all) into the first field
/// numbered `outer` of the message `bytes`, itself a message, just before
/// its first field numbered `before` or higher (or at its end). That
/// message's length is rewritten; everything else is copied as it is.
/// `None` when `bytes` is malformed or has no such field.
///
/// Because prost writes fields in declaration order and [`canonicalize`]
/// keeps that order, a message built without a repeated field and then
/// given its entries this way has the bytes it would have had with them,
/// when the field is declared just before the first one numbered `before`
/// or higher.
pub(crate) fn insert_fields(bytes: &[u8], outer: u32, before: u32, fields: &[u8]) -> Option<Vec<u8>> {
    let top = split(bytes).ok()?;
    let at = top.iter().position(|f| f.number == outer && f.wire == WireType::LengthDelimited)?;
    let inner = top[at].raw;
    let cut = split(inner).ok()?.iter().find(|f| f.number >= before).map_or(inner.len(), |f| f.start);
    let rest = top.get(at + 1).map_or(bytes.len(), |f| f.start);
    let mut out = Vec::with_capacity(bytes.len() + fields.len() + 8);
    out.extend_from_slice(&bytes[..top[at].start]);
    encode_key(outer, WireType::LengthDelimited, &mut out);
    encode_varint((inner.len() + fields.len()) as u64, &mut out);
    out.extend_from_slice(&inner[..cut]);
    out.extend_from_slice(fields);
    out.extend_from_slice(&inner[cut..]);
    out.extend_from_slice(&bytes[rest..]);
    Some(out)
}

/// Bytes that are not a well-formed message of the expected type.
struct Malformed;

struct Field<'a> {
    number: u32,
    wire: WireType,
    raw: &'a [u8],
    /// Where the field (its key) starts in the message.
    start: usize,
}

fn split(mut buf: &[u8]) -> Result<Vec<Field<'_>>, Malformed> {
    let whole = buf.len();
    let mut fields = Vec::new();
    while buf.has_remaining() {
        let start = whole - buf.len();
        let (number, wire) = decode_key(&mut buf).map_err(|_| Malformed)?;
        let raw = match wire {
            WireType::Varint => {
                let start = buf;
                decode_varint(&mut buf).map_err(|_| Malformed)?;
                &start[..start.len() - buf.len()]
            }
            WireType::SixtyFourBit => take(&mut buf, 8)?,
            WireType::ThirtyTwoBit => take(&mut buf, 4)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|_| Malformed)?).map_err(|_| Malformed)?;
                take(&mut buf, len)?
            }
            WireType::StartGroup | WireType::EndGroup => return Err(Malformed),
        };
        fields.push(Field { number, wire, raw, start });
    }
    Ok(fields)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if buf.len() < n {
        return Err(Malformed);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn emit(out: &mut Vec<u8>, number: u32, wire: WireType, raw: &[u8]) {
    encode_key(number, wire, out);
    if wire == WireType::LengthDelimited {
        encode_varint(raw.len() as u64, out);
    }
    out.extend_from_slice(raw);
}

fn canon_into(md: &MessageDescriptor, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
    let fields = split(bytes)?;
    if md.full_name() == "google.protobuf.Any" {
        let type_url = fields.iter().find(|f| f.number == 1).map(|f| String::from_utf8_lossy(f.raw).into_owned());
        let inner = type_url.as_deref().and_then(descriptors::message);
        for f in &fields {
            match (&inner, f.number) {
                (Some(inner), 2) => emit(out, 2, f.wire, &canonicalize(inner, f.raw)),
                _ => emit(out, f.number, f.wire, f.raw),
            }
        }
        return Ok(());
    }
    let mut i = 0;
    while i < fields.len() {
        let f = &fields[i];
        let desc = md.get_field(f.number).filter(|_| f.wire == WireType::LengthDelimited);
        match desc {
            Some(fd) if fd.is_map() => {
                let Kind::Message(entry) = fd.kind() else { unreachable!("map fields are messages") };
                // prost writes a map's entries together; sort that run.
                let mut entries = Vec::new();
                while i < fields.len() && fields[i].number == f.number {
                    entries.push(canonicalize(&entry, fields[i].raw));
                    i += 1;
                }
                entries.sort();
                for e in entries {
                    emit(out, f.number, WireType::LengthDelimited, &e);
                }
                continue;
            }
            Some(fd) => match fd.kind() {
                Kind::Message(inner) => emit(out, f.number, f.wire, &canonicalize(&inner, f.raw)),
                _ => emit(out, f.number, f.wire, f.raw),
            },
            None => emit(out, f.number, f.wire, f.raw),
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind as VK, Struct, Value};
    use prost::{Message, Name};

    fn s(keys: &[&str]) -> Struct {
        Struct {
            fields: keys
                .iter()
                .map(|k| ((*k).to_owned(), Value { kind: Some(VK::StringValue(format!("v-{k}"))) }))
                .collect(),
        }
    }

    #[test]
    fn map_order_does_not_change_the_bytes() {
        let md = descriptors::message(&Struct::type_url()).unwrap();
        let keys: Vec<String> = (0..32).map(|i| format!("k{i}")).collect();
        let fwd: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut rev = fwd.clone();
        rev.reverse();
        let a = canonicalize(&md, &s(&fwd).encode_to_vec());
        let b = canonicalize(&md, &s(&rev).encode_to_vec());
        assert_eq!(a, b);
        // And it still decodes to the same message.
        assert_eq!(Struct::decode(a.as_slice()).unwrap(), s(&fwd));
    }
}
