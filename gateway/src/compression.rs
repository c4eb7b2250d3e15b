//! Compression of upstream responses (a route's `compression`), with Pingora's encoders, as
//! a downstream module added to the requests of routes that compress: modules see the end of
//! a response body that arrives as a separate "done" step, which the proxy's body hook does
//! not (the stream would end unfinished).
//!
//! The decision is made here, not by Pingora's compression module, because an edge must be
//! stricter: the client's `Accept-Encoding` is read with its q-values (`gzip;q=0` refuses
//! gzip), only configured content types of at least `min_size` are compressed, and bodies
//! that are already encoded, partial (`206`, `Content-Range`), bodiless, or marked
//! `Cache-Control: no-transform` are left alone. `Vary: Accept-Encoding` goes on every answer
//! whose encoding depends on it.

use crate::config::{CompressionAlgorithm, CompressionConfig};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModule;
use pingora::protocols::http::compression::{Algorithm, ResponseCompressionCtx};
use std::sync::Arc;

/// A route's compression settings, compiled.
#[derive(Debug, Clone)]
pub struct Compression {
    /// In the order of preference on equal q-values.
    algorithms: Vec<CompressionAlgorithm>,
    level: u32,
    content_types: Vec<String>,
    min_size: u64,
}

impl Compression {
    pub fn new(config: &CompressionConfig) -> Result<Compression, String> {
        if config.algorithms.is_empty() {
            return Err("`algorithms` needs at least one of gzip, br, zstd".into());
        }
        if !(1..=11).contains(&config.level) {
            return Err(format!("level {} is outside 1–11", config.level));
        }
        Ok(Compression {
            algorithms: config.algorithms.clone(),
            level: config.level,
            content_types: config
                .content_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            min_size: config.min_size.get(),
        })
    }

    /// The encoder for this response, if it is to be compressed; adds `Vary` either way when
    /// the answer depends on `Accept-Encoding`.
    fn start(&self, request: &Asked, resp: &mut ResponseHeader) -> Option<ResponseCompressionCtx> {
        if request.head || !self.compressible(resp) {
            return None;
        }
        let _ = resp.append_header(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let chosen = self.choose(request.accept.as_ref())?;
        let mut ctx = ResponseCompressionCtx::new(self.level, false, false);
        // The encoder picks from the client's list: hand it the one choice made here.
        let mut asked = RequestHeader::build("GET", b"/", Some(1)).ok()?;
        asked
            .insert_header(header::ACCEPT_ENCODING, chosen.token())
            .ok()?;
        ctx.request_filter(&asked);
        ctx.response_header_filter(resp, false);
        ctx.is_enabled().then_some(ctx)
    }

    fn compressible(&self, resp: &ResponseHeader) -> bool {
        let h = &resp.headers;
        let content_type = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let small = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n < self.min_size);
        let no_transform = h.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        });
        resp.status == http::StatusCode::OK
            && !h.contains_key(header::CONTENT_ENCODING)
            && !h.contains_key(header::CONTENT_RANGE)
            && !no_transform
            && !small
            && content_type.is_some_and(|t| {
                self.content_types
                    .iter()
                    .any(|want| t == *want || (want.ends_with('/') && t.starts_with(want.as_str())))
            })
    }

    /// The configured algorithm the client prefers (highest q, then configuration order);
    /// none when it accepts none of them.
    fn choose(&self, accept: Option<&HeaderValue>) -> Option<CompressionAlgorithm> {
        let accept = accept?.to_str().ok()?;
        let mut best: Option<(u32, usize, CompressionAlgorithm)> = None;
        for (rank, algorithm) in self.algorithms.iter().enumerate() {
            let q = q_value(accept, algorithm.token());
            if q == 0 {
                continue;
            }
            let better = best.is_none_or(|(bq, brank, _)| q > bq || (q == bq && rank < brank));
            if better {
                best = Some((q, rank, *algorithm));
            }
        }
        best.map(|(_, _, a)| a)
    }
}

/// What the request said that compression needs.
#[derive(Debug)]
struct Asked {
    accept: Option<HeaderValue>,
    head: bool,
}

/// The module a compressing route's request gets ([`CompressionModule::enable_for`]).
pub struct CompressionModule {
    settings: Arc<Compression>,
    asked: Asked,
    encoder: Option<ResponseCompressionCtx>,
}

impl CompressionModule {
    /// Adds the module to this request's downstream modules. Only requests of routes that
    /// compress get one, so the others pay nothing for compression (a module built, called
    /// and dropped on every request cost ~700 instructions).
    pub fn enable_for(session: &mut pingora::proxy::Session, settings: &Arc<Compression>) {
        let req = session.downstream_session.req_header();
        let module = CompressionModule {
            settings: settings.clone(),
            asked: Asked {
                accept: req.headers.get(header::ACCEPT_ENCODING).cloned(),
                head: req.method == http::Method::HEAD,
            },
            encoder: None,
        };
        // `false` only if this request already has one; it keeps that one.
        session.downstream_modules_ctx.add_module(Box::new(module));
    }
}

#[async_trait]
impl HttpModule for CompressionModule {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        if !end_of_stream && !resp.status.is_informational() {
            self.encoder = self.settings.start(&self.asked, resp);
        }
        Ok(())
    }

    fn response_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        if let Some(encoder) = &mut self.encoder {
            if let Some(encoded) = encoder.response_body_filter(body.as_ref(), end_of_stream) {
                *body = Some(encoded);
            }
            if end_of_stream {
                self.encoder = None;
            }
        }
        Ok(())
    }

    fn response_done_filter(&mut self) -> pingora::Result<Option<Bytes>> {
        // The body ended without its end flag: finish the stream now.
        Ok(self
            .encoder
            .take()
            .and_then(|mut e| e.response_body_filter(None, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The q-value (in thousandths) `accept` gives `token`: its own entry, else `*`'s, else 0.
fn q_value(accept: &str, token: &str) -> u32 {
    let mut wildcard = 0;
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim().eq_ignore_ascii_case("q")).then(|| v.trim())
            })
            .map_or(1000, |v| {
                v.parse::<f32>()
                    .map_or(0, |q| (q.clamp(0.0, 1.0) * 1000.0).round() as u32)
            });
        if name.eq_ignore_ascii_case(token) {
            return q;
        }
        if name == "*" {
            wildcard = q;
        }
    }
    wildcard
}

impl CompressionAlgorithm {
    fn token(self) -> &'static str {
        match self {
            CompressionAlgorithm::Gzip => Algorithm::Gzip.as_str(),
            CompressionAlgorithm::Br => Algorithm::Brotli.as_str(),
            CompressionAlgorithm::Zstd => Algorithm::Zstd.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compression() -> Compression {
        Compression::new(&CompressionConfig::default()).unwrap()
    }

    #[test]
    fn accept_encoding_q_values_decide() {
        let c = compression();
        let pick = |v: &str| c.choose(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(pick("gzip"), Some(CompressionAlgorithm::Gzip));
        assert_eq!(
            pick("gzip, br"),
            Some(CompressionAlgorithm::Br),
            "ties: configured order"
        );
        assert_eq!(
            pick("br;q=0.5, gzip;q=0.8"),
            Some(CompressionAlgorithm::Gzip)
        );
        assert_eq!(pick("gzip;q=0, identity"), None);
        assert_eq!(pick("*;q=0.1, br;q=0"), Some(CompressionAlgorithm::Zstd));
        assert_eq!(pick("identity"), None);
        assert_eq!(c.choose(None), None);
    }

    #[test]
    fn only_whole_unencoded_bodies_of_listed_types_are_compressed() {
        let c = compression();
        let resp = |status: u16, headers: &[(&str, &str)]| {
            let mut r = ResponseHeader::build(status, None).unwrap();
            for (n, v) in headers {
                r.insert_header(n.to_string(), *v).unwrap();
            }
            r
        };
        let json = [("content-type", "application/json; charset=utf-8")];
        assert!(c.compressible(&resp(200, &json)));
        assert!(!c.compressible(&resp(206, &json)));
        assert!(!c.compressible(&resp(200, &[("content-type", "image/png")])));
        assert!(!c.compressible(&resp(200, &[json[0], ("content-encoding", "gzip")])));
        assert!(!c.compressible(&resp(
            200,
            &[json[0], ("cache-control", "public, no-transform")]
        )));
        assert!(!c.compressible(&resp(200, &[json[0], ("content-length", "100")])));
        let head = Asked {
            accept: Some(HeaderValue::from_static("gzip")),
            head: true,
        };
        assert!(c.start(&head, &mut resp(200, &json)).is_none());
    }
}
