//! `defaults.access_log` → access loggers on every HTTP connection manager:
//! Envoy's file logger (JSON lines or text, to stdout, stderr or a file on
//! the Envoy's machine) and the gRPC logger that streams every entry to
//! legate's access-log service, which writes the fleet's log in one place.

use std::time::Duration;

use envoy_types::pb::envoy::config::accesslog::v3::{access_log, AccessLog as EnvoyAccessLog};
use envoy_types::pb::envoy::config::core::v3::{
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    substitution_format_string, ApiVersion, GrpcService, SubstitutionFormatString,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{file_access_log, FileAccessLog};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use super::{any, proto_duration};
use crate::policy::{AccessLog, LogFormat, Policy};

/// The log name Envoy streams under (legate's service accepts any).
pub(crate) const LOG_NAME: &str = "legate";
/// How long Envoy buffers entries before streaming them.
const FLUSH: Duration = Duration::from_millis(200);

/// The fields of a local JSON line; legate's central log has the same
/// names (plus the node). Documented in docs/observability.md.
const JSON_FIELDS: &[(&str, &str)] = &[
    ("time", "%START_TIME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("status", "%RESPONSE_CODE%"),
    ("duration_ms", "%DURATION%"),
    ("service", "%UPSTREAM_CLUSTER%"),
    ("route", "%ROUTE_NAME%"),
    ("client_ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("user_id", "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("details", "%RESPONSE_CODE_DETAILS%"),
];

/// The HCM's `access_log` list.
pub(super) fn access_logs(policy: &Policy) -> Vec<EnvoyAccessLog> {
    let Some(AccessLog { format, path }) = policy.access_log.on() else { return Vec::new() };
    let mut out = Vec::new();
    if path != "legate" {
        let file = match path.as_str() {
            "stdout" => "/dev/stdout",
            "stderr" => "/dev/stderr",
            other => other,
        };
        // Text: Envoy's default format.
        let access_log_format = (*format == LogFormat::Json).then(|| {
            let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
            file_access_log::AccessLogFormat::LogFormat(SubstitutionFormatString {
                format: Some(substitution_format_string::Format::JsonFormat(Struct {
                    fields: JSON_FIELDS.iter().map(|(k, v)| ((*k).to_owned(), s(v))).collect(),
                })),
                ..Default::default()
            })
        });
        let config = FileAccessLog { path: file.to_owned(), access_log_format };
        out.push(EnvoyAccessLog {
            name: "envoy.access_loggers.file".into(),
            config_type: Some(access_log::ConfigType::TypedConfig(any(&config))),
            ..Default::default()
        });
    }
    let central = HttpGrpcAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: LOG_NAME.into(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: "legate_xds".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3.into(),
            buffer_flush_interval: Some(proto_duration(FLUSH)),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(EnvoyAccessLog {
        name: "envoy.access_loggers.http_grpc".into(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(&central))),
        ..Default::default()
    });
    out
}
