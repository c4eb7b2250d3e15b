//! Header value templates: literals, `${env:NAME}` (resolved once, when the config is
//! compiled, so a secret never sits in the YAML), and request variables such as
//! `${request_id}` and `${client_ip}` (rendered per request). `$$` is a literal `$`.

use crate::api::RequestContext;
use http::HeaderValue;
use pingora::proxy::Session;
use std::fmt::Write;

/// A request variable a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    RequestId,
    ClientIp,
    Host,
    Method,
    Path,
    Scheme,
    Route,
    UserId,
}

impl Var {
    const ALL: [(&'static str, Var); 8] = [
        ("request_id", Var::RequestId),
        ("client_ip", Var::ClientIp),
        ("host", Var::Host),
        ("method", Var::Method),
        ("path", Var::Path),
        ("scheme", Var::Scheme),
        ("route", Var::Route),
        ("user_id", Var::UserId),
    ];

    fn parse(name: &str) -> Option<Var> {
        Var::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone)]
pub enum Part {
    Literal(String),
    Var(Var),
}

/// A compiled header value.
#[derive(Debug, Clone)]
pub enum Template {
    /// No request variables: the header value is built once.
    Fixed(HeaderValue),
    Dynamic(Vec<Part>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("unterminated `${{` in {0:?}")]
    Unterminated(String),
    #[error("unknown variable `${{{0}}}`; known: request_id, client_ip, host, method, path, scheme, route, user_id, env:NAME")]
    UnknownVar(String),
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("the value is not a valid header value")]
    InvalidValue,
}

impl Template {
    pub fn compile_with_env(
        source: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(pos) = rest.find('$') {
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                literal.push('$');
                rest = stripped;
            } else if let Some(inner) = after.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| TemplateError::Unterminated(source.to_string()))?;
                let name = inner[..end].trim();
                if let Some(env_name) = name.strip_prefix("env:") {
                    let value =
                        env(env_name).ok_or_else(|| TemplateError::MissingEnv(env_name.into()))?;
                    literal.push_str(&value);
                } else {
                    let var =
                        Var::parse(name).ok_or_else(|| TemplateError::UnknownVar(name.into()))?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                rest = &inner[end + 1..];
            } else {
                literal.push('$');
                rest = after;
            }
        }
        literal.push_str(rest);
        if parts.is_empty() {
            return HeaderValue::from_str(&literal)
                .map(Template::Fixed)
                .map_err(|_| TemplateError::InvalidValue);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        for part in &parts {
            if let Part::Literal(l) = part {
                HeaderValue::from_str(l).map_err(|_| TemplateError::InvalidValue)?;
            }
        }
        Ok(Template::Dynamic(parts))
    }

    /// The value for this request; `None` when a variable renders to something that cannot be a
    /// header value (the header is then left out rather than sent broken).
    pub fn render(&self, session: &Session, ctx: &RequestContext) -> Option<HeaderValue> {
        match self {
            Template::Fixed(v) => Some(v.clone()),
            Template::Dynamic(parts) => {
                let mut out = String::with_capacity(64);
                for part in parts {
                    match part {
                        Part::Literal(l) => out.push_str(l),
                        Part::Var(v) => render_var(*v, session, ctx, &mut out),
                    }
                }
                HeaderValue::from_str(&out).ok()
            }
        }
    }
}

fn render_var(var: Var, session: &Session, ctx: &RequestContext, out: &mut String) {
    let req = session.req_header();
    match var {
        Var::RequestId => out.push_str(&ctx.request_id),
        Var::ClientIp => {
            if let Some(ip) = ctx.client_ip {
                let _ = write!(out, "{ip}");
            }
        }
        Var::Host => {
            let host = req
                .uri
                .host()
                .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok());
            out.push_str(host.unwrap_or(""));
        }
        Var::Method => out.push_str(req.method.as_str()),
        Var::Path => out.push_str(req.uri.path()),
        Var::Scheme => out.push_str(ctx.scheme),
        Var::Route => out.push_str(&ctx.route),
        Var::UserId => {
            if let Some(id) = &ctx.identity {
                out.push_str(&id.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "API_KEY").then(|| "s3cret".to_string())
    }

    #[test]
    fn literal_and_env_are_fixed() {
        match Template::compile_with_env("Bearer ${env:API_KEY}", env).unwrap() {
            Template::Fixed(v) => assert_eq!(v, "Bearer s3cret"),
            other => panic!("expected fixed, got {other:?}"),
        }
    }

    #[test]
    fn dollar_escapes() {
        match Template::compile_with_env("a$$b$c", env).unwrap() {
            Template::Fixed(v) => assert_eq!(v, "a$b$c"),
            other => panic!("expected fixed, got {other:?}"),
        }
    }

    #[test]
    fn variables_are_dynamic() {
        match Template::compile_with_env("id=${request_id};ip=${ client_ip }", env).unwrap() {
            Template::Dynamic(parts) => assert_eq!(parts.len(), 4),
            other => panic!("expected dynamic, got {other:?}"),
        }
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(
            Template::compile_with_env("${env:NOPE}", env).unwrap_err(),
            TemplateError::MissingEnv("NOPE".into())
        );
        assert_eq!(
            Template::compile_with_env("${who}", env).unwrap_err(),
            TemplateError::UnknownVar("who".into())
        );
        assert!(matches!(
            Template::compile_with_env("${request_id", env).unwrap_err(),
            TemplateError::Unterminated(_)
        ));
        assert_eq!(
            Template::compile_with_env("bad\nvalue", env).unwrap_err(),
            TemplateError::InvalidValue
        );
    }
}
