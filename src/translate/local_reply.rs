//! JSON bodies for every reply Envoy generates itself (SPEC §3):
//! `{"error": "<code>", "message": "...", "status": N}`.
//!
//! Mappers match in order: first specific causes by response flag (Envoy's
//! own body is empty or terse for some), then by status code, where Envoy's
//! own text (`%LOCAL_REPLY_BODY%`, e.g. "Jwt is missing") is the message.

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log_filter::FilterSpecifier, comparison_filter::Op, AccessLogFilter, ComparisonFilter, ResponseFlagFilter,
    StatusCodeFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    substitution_format_string::Format, RuntimeUInt32, SubstitutionFormatString,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    LocalReplyConfig, ResponseMapper,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, UInt32Value, Value};

const LOCAL_BODY: &str = "%LOCAL_REPLY_BODY%";

/// (Envoy response flag, error code, message, status instead of Envoy's)
const BY_FLAG: &[(&str, &str, &str, Option<u32>)] = &[
    ("NR", "not_found", "no route matches %REQ(:METHOD)% %REQ(:PATH)%", None),
    ("UO", "service_unavailable", "the upstream service is overloaded (circuit breaker open)", None),
    ("UH", "service_unavailable", "no healthy upstream", None),
    ("UF", "service_unavailable", "cannot connect to the upstream service", None),
    ("NC", "service_unavailable", "the upstream service is not configured", None),
    ("UT", "gateway_timeout", "the upstream service did not answer in time", None),
    // A route's idle timeout before the answer began: Envoy says 408, as if
    // the client were slow; it is the service that went quiet.
    ("SI", "gateway_timeout", "the upstream service sent nothing for longer than the idle timeout", Some(504)),
    ("RL", "too_many_requests", "rate limit exceeded", None),
];

/// (status, error code, message: Envoy's own text when `None`)
const BY_STATUS: &[(u32, &str, Option<&str>)] = &[
    (400, "bad_request", None),
    (401, "unauthorized", None),
    (403, "forbidden", None),
    (404, "not_found", None),
    (408, "request_timeout", None),
    (413, "payload_too_large", None),
    // Envoy's local rate limiter sets no response flag, and says
    // `local_rate_limited`: the same words as the global limit's instead.
    (429, "too_many_requests", Some("rate limit exceeded")),
    (431, "headers_too_large", None),
    (500, "internal_error", None),
    (502, "bad_gateway", None),
    (503, "service_unavailable", None),
    (504, "gateway_timeout", None),
];

/// The HCM's `local_reply_config`.
pub(super) fn config() -> LocalReplyConfig {
    let by_flag = BY_FLAG.iter().map(|(flag, code, msg, status)| ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                flags: vec![(*flag).to_owned()],
            })),
        }),
        body_format_override: Some(json(code, msg)),
        status_code: status.map(|value| UInt32Value { value }),
        ..Default::default()
    });
    let by_status = BY_STATUS.iter().map(|(status, code, message)| ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                comparison: Some(ComparisonFilter {
                    op: Op::Eq.into(),
                    value: Some(RuntimeUInt32 {
                        default_value: *status,
                        runtime_key: format!("legate.local_reply.{status}"),
                    }),
                }),
            })),
        }),
        body_format_override: Some(json(code, message.unwrap_or(LOCAL_BODY))),
        ..Default::default()
    });
    LocalReplyConfig { mappers: by_flag.chain(by_status).collect(), body_format: Some(json("error", LOCAL_BODY)) }
}

fn json(code: &str, message: &str) -> SubstitutionFormatString {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let fields =
        [("error", s(code)), ("message", s(message)), ("status", s("%RESPONSE_CODE%"))].map(|(k, v)| (k.to_owned(), v));
    SubstitutionFormatString {
        format: Some(Format::JsonFormat(Struct { fields: fields.into_iter().collect() })),
        ..Default::default()
    }
}
