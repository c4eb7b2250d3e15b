// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }

    /// Portico patch 0018: a name that needs no copy.
    pub(crate) fn from_static(name: &'static str) -> Self {
        CaseHeaderName(Bytes::from_static(name.as_bytes()))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// Portico patch 0013 (vendor/patches/): the `HeaderName` of a name that is already one
    /// (lowercase, valid), made without parsing it into a new allocation.
    fn static_header_name(&self) -> Option<HeaderName> {
        None
    }

    /// Portico patch 0028 (vendor/patches/): whether the name is spelled the way a head
    /// without a case map writes it (its titled form, else lowercase), so that its case needs
    /// recording only in a head that already keeps a case map. True of a `HeaderName`, whose
    /// case name is made from exactly that form.
    fn has_default_case(&self) -> bool {
        false
    }

    /// The `HeaderName`, and the case the name came in: `None` when that is its default case
    /// (Portico patch 0028: a `HeaderName`'s case name, a copy for names not written titled,
    /// is then made only if the head keeps a case map). Portico patch 0032 (vendor/patches/):
    /// a trait method, so that a type can answer both at once.
    fn header_and_case_name(self) -> Result<(HeaderName, Option<CaseHeaderName>)>
    where
        Self: Sized,
    {
        // Portico patch 0013: a static lowercase name is not parsed again.
        match self.static_header_name() {
            Some(header_name) if self.has_default_case() => Ok((header_name, None)),
            Some(header_name) => Ok((header_name, Some(self.into_case_header_name()))),
            None => {
                let case_header_name = self.into_case_header_name();
                let header_name = case_header_name
                    .as_slice()
                    .try_into()
                    .or_err(InvalidHTTPHeader, "invalid header name")?;
                Ok((header_name, Some(case_header_name)))
            }
        }
    }
}

/// Portico patch 0032 (vendor/patches/): a field name as parsed off the wire, a range of the
/// buffer the head was read into. Its `HeaderName` is parsed from those bytes, and they are
/// shared out of the buffer (a reference count taken and, most often, dropped again) only
/// when the name is not in its default case, the one case a head may need to record.
pub struct WireHeaderName<'a> {
    buf: &'a Bytes,
    name: &'a [u8],
}

impl<'a> WireHeaderName<'a> {
    /// The name at `range` of `buf`; panics if `range` is not inside `buf`.
    pub fn new(buf: &'a Bytes, range: std::ops::Range<usize>) -> Self {
        WireHeaderName {
            buf,
            name: &buf[range],
        }
    }
}

impl IntoCaseHeaderName for WireHeaderName<'_> {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.buf.slice_ref(self.name))
    }

    fn header_and_case_name(self) -> Result<(HeaderName, Option<CaseHeaderName>)> {
        if let Some(header_name) = titled_wire_name(self.name) {
            return Ok((header_name, None));
        }
        let header_name =
            HeaderName::from_bytes(self.name).or_err(InvalidHTTPHeader, "invalid header name")?;
        if self.name == default_case(&header_name).as_bytes() {
            return Ok((header_name, None));
        }
        Ok((header_name, Some(self.into_case_header_name())))
    }
}

/// Portico patch 0028: the case name a head without a case map writes `name` with.
pub(crate) fn default_case_name(name: &HeaderName) -> CaseHeaderName {
    CaseHeaderName(titled_header_name(name))
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

// Portico patch 0019 (vendor/patches/): the `HeaderName`s of the last few `&'static str`
// names, per thread. A proxy sets the same handful of names on every request; checking and
// building each one again (a validation pass and `from_static`'s own lookup and checks) cost
// ~280 instructions per field. A `&'static str` is identified by its address and length: the
// same text at the same place is the same name.
const REMEMBERED_NAMES: usize = 8;

type RememberedName = Option<((usize, usize), HeaderName)>;

thread_local! {
    static STATIC_NAMES: std::cell::RefCell<([RememberedName; REMEMBERED_NAMES], usize)> =
        const { std::cell::RefCell::new(([const { None }; REMEMBERED_NAMES], 0)) };
}

fn remembered_static_name(name: &'static str) -> Option<HeaderName> {
    let key = (name.as_ptr() as usize, name.len());
    STATIC_NAMES
        .try_with(|names| {
            names
                .borrow()
                .0
                .iter()
                .flatten()
                .find(|(k, _)| *k == key)
                .map(|(_, n)| n.clone())
        })
        .ok()
        .flatten()
}

fn remember_static_name(name: &'static str, header_name: &HeaderName) {
    let key = (name.as_ptr() as usize, name.len());
    let _ = STATIC_NAMES.try_with(|names| {
        let (slots, next) = &mut *names.borrow_mut();
        slots[*next] = Some((key, header_name.clone()));
        *next = (*next + 1) % REMEMBERED_NAMES;
    });
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    fn static_header_name(&self) -> Option<HeaderName> {
        // Portico patch 0019: a name this thread made before is looked up by its address.
        if let Some(name) = remembered_static_name(self) {
            return Some(name);
        }
        // RFC 9110 token characters, lowercase: exactly what `HeaderName::from_static` takes.
        let valid = !self.is_empty()
            && self.bytes().all(|b| {
                matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\''
                    | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
            });
        let name = valid.then(|| HeaderName::from_static(self))?;
        remember_static_name(self, &name);
        Some(name)
    }
}

// Portico patch 0017 (vendor/patches/): a `HeaderName` is not parsed again; it is one.
impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn static_header_name(&self) -> Option<HeaderName> {
        Some(self.clone())
    }

    fn has_default_case(&self) -> bool {
        true
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn static_header_name(&self) -> Option<HeaderName> {
        Some((*self).clone())
    }

    fn has_default_case(&self) -> bool {
        true
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // Portico patch 0020 (vendor/patches/): the names HTTP/1 clients and servers send
        // most, in the case they send them, so that such heads need no case map (patch 0018).
        header::ACCEPT => "Accept",
        header::ACCEPT_ENCODING => "Accept-Encoding",
        header::ACCEPT_LANGUAGE => "Accept-Language",
        header::AUTHORIZATION => "Authorization",
        header::COOKIE => "Cookie",
        header::ETAG => "ETag",
        header::EXPIRES => "Expires",
        header::IF_MODIFIED_SINCE => "If-Modified-Since",
        header::IF_NONE_MATCH => "If-None-Match",
        header::LAST_MODIFIED => "Last-Modified",
        header::LOCATION => "Location",
        header::ORIGIN => "Origin",
        header::REFERER => "Referer",
        header::USER_AGENT => "User-Agent",
        header::VARY => "Vary",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

/// Portico patch 0035 (vendor/patches/): the inverse of [`titled_header_name_str`], for a name
/// read from the wire. A field named exactly as a head without a case map writes it, which is
/// how most clients and servers send the names above, is known by its length, its first byte
/// and one comparison, instead of validated, lowercased into a buffer and looked up by
/// `HeaderName::from_bytes` (~110 instructions a field).
fn titled_wire_name(name: &[u8]) -> Option<HeaderName> {
    let (titled, header_name): (&str, HeaderName) = match (name.len(), name.first()) {
        (3, _) => ("Age", header::AGE),
        (4, Some(b'D')) => ("Date", header::DATE),
        (4, Some(b'H')) => ("Host", header::HOST),
        (4, Some(b'E')) => ("ETag", header::ETAG),
        (4, Some(b'V')) => ("Vary", header::VARY),
        (6, Some(b'S')) => ("Server", header::SERVER),
        (6, Some(b'A')) => ("Accept", header::ACCEPT),
        (6, Some(b'C')) => ("Cookie", header::COOKIE),
        (6, Some(b'O')) => ("Origin", header::ORIGIN),
        (7, Some(b'E')) => ("Expires", header::EXPIRES),
        (7, Some(b'R')) => ("Referer", header::REFERER),
        (8, _) => ("Location", header::LOCATION),
        (10, Some(b'C')) => ("Connection", header::CONNECTION),
        (10, Some(b'S')) => ("Set-Cookie", header::SET_COOKIE),
        (10, Some(b'U')) => ("User-Agent", header::USER_AGENT),
        (12, _) => ("Content-Type", header::CONTENT_TYPE),
        (13, Some(b'A')) if name[1] == b'c' => ("Accept-Ranges", header::ACCEPT_RANGES),
        (13, Some(b'A')) => ("Authorization", header::AUTHORIZATION),
        (13, Some(b'C')) => ("Cache-Control", header::CACHE_CONTROL),
        (13, Some(b'I')) => ("If-None-Match", header::IF_NONE_MATCH),
        (13, Some(b'L')) => ("Last-Modified", header::LAST_MODIFIED),
        (14, _) => ("Content-Length", header::CONTENT_LENGTH),
        (15, _) if name[7] == b'E' => ("Accept-Encoding", header::ACCEPT_ENCODING),
        (15, _) => ("Accept-Language", header::ACCEPT_LANGUAGE),
        (16, _) => ("Content-Encoding", header::CONTENT_ENCODING),
        (17, Some(b'T')) => ("Transfer-Encoding", header::TRANSFER_ENCODING),
        (17, Some(b'I')) => ("If-Modified-Since", header::IF_MODIFIED_SINCE),
        _ => return None,
    };
    (name == titled.as_bytes()).then_some(header_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titled_wire_names_are_the_titled_names_read_back() {
        let titled = [
            header::ACCEPT_RANGES,
            header::AGE,
            header::CACHE_CONTROL,
            header::CONNECTION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LENGTH,
            header::DATE,
            header::TRANSFER_ENCODING,
            header::HOST,
            header::SERVER,
            header::SET_COOKIE,
            header::ACCEPT,
            header::ACCEPT_ENCODING,
            header::ACCEPT_LANGUAGE,
            header::AUTHORIZATION,
            header::COOKIE,
            header::ETAG,
            header::EXPIRES,
            header::IF_MODIFIED_SINCE,
            header::IF_NONE_MATCH,
            header::LAST_MODIFIED,
            header::LOCATION,
            header::ORIGIN,
            header::REFERER,
            header::USER_AGENT,
            header::VARY,
        ];
        for name in titled {
            let text = titled_header_name_str(&name).unwrap();
            assert_eq!(
                titled_wire_name(text.as_bytes()),
                Some(name.clone()),
                "{text}"
            );
            // Any other spelling takes the general parse (and keeps its case).
            assert_eq!(titled_wire_name(name.as_str().as_bytes()), None, "{name}");
            assert_eq!(
                titled_wire_name(text.to_ascii_uppercase().as_bytes()),
                None,
                "{text}"
            );
        }
        // Names of the same lengths and first bytes that are not in the list.
        for other in [
            "Dnt",
            "Xxxx",
            "Sec-Fetch-Mode",
            "Accept-Charset",
            "Keep-Alive",
            "X-Foo",
        ] {
            assert_eq!(titled_wire_name(other.as_bytes()), None, "{other}");
        }
        assert_eq!(titled_wire_name(b""), None);
        assert_eq!(
            titled_header_name_str(&HeaderName::from_static("x-foo")),
            None
        );
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}

// Portico patch 0013.
#[cfg(test)]
mod static_name_tests {
    use super::*;

    #[test]
    fn only_valid_lowercase_names_skip_the_parse() {
        let name = |s: &'static str| s.static_header_name();
        assert_eq!(name("x-request-id"), Some(HeaderName::from_static("x-request-id")));
        assert_eq!(name("host"), Some(header::HOST));
        assert_eq!(name("X-Request-Id"), None);
        assert_eq!(name("bad name"), None);
        assert_eq!(name(""), None);
    }
}

// Portico patch 0032.
#[cfg(test)]
mod wire_name_tests {
    use super::*;

    fn head_from_wire(wire: &'static [u8], names: &[std::ops::Range<usize>]) -> ResponseHeader {
        let buf = Bytes::from_static(wire);
        let mut head = ResponseHeader::build(200, None).unwrap();
        for name in names {
            head.append_header(WireHeaderName::new(&buf, name.clone()), "v")
                .unwrap();
        }
        head
    }

    fn written(head: &ResponseHeader) -> Vec<u8> {
        let mut out = Vec::new();
        head.header_to_h1_wire(&mut out);
        out
    }

    #[test]
    fn wire_names_in_their_default_case_keep_no_case_map_and_others_keep_their_case() {
        let head = head_from_wire(b"Content-Type x-custom", &[0..12, 13..21]);
        assert_eq!(head.case_header_iter().count(), 0);
        assert_eq!(written(&head), b"Content-Type: v\r\nx-custom: v\r\n");

        let head = head_from_wire(b"content-type X-Custom", &[0..12, 13..21]);
        assert_eq!(head.headers.get("content-type").unwrap(), "v");
        assert_eq!(written(&head), b"content-type: v\r\nX-Custom: v\r\n");
    }

    #[test]
    fn an_invalid_wire_name_is_refused() {
        let buf = Bytes::from_static(b"bad name");
        let mut head = ResponseHeader::build(200, None).unwrap();
        assert!(head
            .append_header(WireHeaderName::new(&buf, 0..8), "v")
            .is_err());
    }
}
