//! The codes of the JSON error body (`{"error":{"code":…}}`) that every answer the gateway
//! makes itself carries. Clients branch on these strings, so they are a contract: the list
//! is in `docs/errors.md`, and nothing outside this enum spells one.

/// One code of the error body, with the HTTP status it goes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    RateLimited,
    HeadersTooLarge,
    InternalError,
    BadGateway,
    UpstreamUnavailable,
    GatewayTimeout,
}

impl ErrorCode {
    /// Every code, for documentation checks and tests.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::RateLimited,
        ErrorCode::HeadersTooLarge,
        ErrorCode::InternalError,
        ErrorCode::BadGateway,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::GatewayTimeout,
    ];

    /// The code as it appears in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::GatewayTimeout => "gateway_timeout",
        }
    }

    /// The status this code is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UriTooLong => 414,
            ErrorCode::RateLimited => 429,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::InternalError => 500,
            ErrorCode::BadGateway => 502,
            ErrorCode::UpstreamUnavailable => 503,
            ErrorCode::GatewayTimeout => 504,
        }
    }

    /// The code for a status the gateway answers with when nothing more specific is known
    /// (a proxying failure, a limit).
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::RouteNotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            413 => ErrorCode::PayloadTooLarge,
            414 => ErrorCode::UriTooLong,
            429 => ErrorCode::RateLimited,
            431 => ErrorCode::HeadersTooLarge,
            502 => ErrorCode::BadGateway,
            503 => ErrorCode::UpstreamUnavailable,
            504 => ErrorCode::GatewayTimeout,
            s if s >= 500 => ErrorCode::InternalError,
            _ => ErrorCode::BadRequest,
        }
    }

    /// The message used when the code's producer has nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "The request is malformed",
            ErrorCode::Unauthorized => "Authentication is required",
            ErrorCode::Forbidden => "Access is forbidden",
            ErrorCode::RouteNotFound => "No route matches this request",
            ErrorCode::MethodNotAllowed => "The method is not allowed on this route",
            ErrorCode::RequestTimeout => "The request took too long to arrive",
            ErrorCode::PayloadTooLarge => "The request body is too large",
            ErrorCode::UriTooLong => "The request URI is too long",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::HeadersTooLarge => "The request headers are too large",
            ErrorCode::InternalError => "The gateway failed to handle the request",
            ErrorCode::BadGateway => "The upstream server failed to answer",
            ErrorCode::UpstreamUnavailable => "No healthy upstream server is available",
            ErrorCode::GatewayTimeout => "The upstream server did not answer in time",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_agree_both_ways() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::for_status(code.status()), code, "{code}");
        }
        assert_eq!(ErrorCode::for_status(500), ErrorCode::InternalError);
        assert_eq!(ErrorCode::for_status(418), ErrorCode::BadRequest);
    }
}
