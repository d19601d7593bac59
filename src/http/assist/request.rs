//! Reading and validating an assist request: size first (413), then content type (415),
//! then JSON (400 naming the field), then the ranges of each value.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::wire::{AssistRequest, FecHint, PathHint};
use crate::config::is_host;
use crate::http::body::read_body;
use crate::http::problem::Problem;

const DEFAULT_MTU: u16 = 1152;
const DEFAULT_OVERHEAD: f64 = 0.35;
const MAX_PATHS: usize = 8;
const MAX_PEER_HINT_CHARS: usize = 128;

/// Validated request parameters.
pub(super) struct AssistParams {
    pub(super) paths: Option<Vec<Path>>,
    pub(super) prefer_reality: bool,
    pub(super) mtu: u16,
    pub(super) overhead: f64,
}

/// A path for multipath planning.
pub(super) struct Path {
    pub(super) id: String,
    pub(super) priority: u32,
}

/// Size and time first (413, 408), then content type (415), then JSON (400 naming the
/// field).
pub(super) async fn read_request(
    headers: &HeaderMap,
    body: Body,
    body_deadline: Duration,
) -> Result<AssistRequest, Problem> {
    let bytes = read_body(headers, body, body_deadline).await?;
    if bytes.is_empty() {
        return Ok(AssistRequest::default());
    }
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    parse(&bytes)
}

/// The JSON body: an object (400 naming the field otherwise).
fn parse(bytes: &[u8]) -> Result<AssistRequest, Problem> {
    // serde would also accept a positional array for a struct (the nested ones are
    // guarded in `wire`); the contract wants an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request("body: must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.starts_with('?') {
            Problem::bad_request(format!("body: invalid JSON: {inner}"))
        } else {
            Problem::bad_request(format!("{path}: {inner}"))
        }
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

pub(super) fn validate(request: AssistRequest) -> Result<AssistParams, Problem> {
    if let Some(hint) = &request.peer_hint
        && hint.chars().count() > MAX_PEER_HINT_CHARS
    {
        return Err(Problem::bad_request(format!(
            "peer_hint: longer than {MAX_PEER_HINT_CHARS} characters"
        )));
    }
    if let Some(min) = request.min_paths
        && !(1..=MAX_PATHS as i64).contains(&min)
    {
        return Err(Problem::bad_request("min_paths: must be between 1 and 8"));
    }
    let (mtu, overhead) = validate_fec(request.fec.as_ref())?;
    let paths = match request.paths {
        Some(paths) if !paths.is_empty() => Some(validate_paths(paths)?),
        _ => None,
    };
    Ok(AssistParams {
        paths,
        prefer_reality: request.prefer_reality.unwrap_or(false),
        mtu,
        overhead,
    })
}

fn validate_fec(fec: Option<&FecHint>) -> Result<(u16, f64), Problem> {
    let mtu = match fec.and_then(|f| f.mtu) {
        None => DEFAULT_MTU,
        Some(m) if (256..=9000).contains(&m) => m as u16,
        Some(_) => {
            return Err(Problem::bad_request(
                "fec.mtu: must be between 256 and 9000",
            ));
        }
    };
    let overhead = match fec.and_then(|f| f.repair_overhead) {
        None => DEFAULT_OVERHEAD,
        Some(o) if (0.0..=1.0).contains(&o) => o,
        Some(_) => {
            return Err(Problem::bad_request(
                "fec.repair_overhead: must be between 0.0 and 1.0",
            ));
        }
    };
    Ok((mtu, overhead))
}

fn validate_paths(paths: Vec<PathHint>) -> Result<Vec<Path>, Problem> {
    if paths.len() > MAX_PATHS {
        return Err(Problem::bad_request(format!(
            "paths: at most {MAX_PATHS} entries"
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(paths.len());
    for (i, p) in paths.into_iter().enumerate() {
        if !is_host(&p.address) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].address: must be a hostname or IP address"
            )));
        }
        if !(1..=65_535).contains(&p.port) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].port: must be between 1 and 65535"
            )));
        }
        let id = p.id.unwrap_or_else(|| format!("path-{}", i + 1));
        if id.is_empty() || id.chars().count() > 64 {
            return Err(Problem::bad_request(format!(
                "paths[{i}].id: must be 1 to 64 characters"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(Problem::bad_request(format!(
                "paths[{i}].id: duplicate id {id:?}"
            )));
        }
        out.push(Path {
            id,
            priority: p.priority.unwrap_or(100),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> AssistRequest {
        serde_json::from_str(json).unwrap()
    }

    fn detail(r: Result<AssistParams, Problem>) -> String {
        r.err().expect("should fail").detail
    }

    #[test]
    fn nested_structs_are_objects_only_and_integers_may_be_written_as_1_0() {
        let refused = |json: &str| parse(json.as_bytes()).expect_err(json).detail;
        assert!(refused(r#"{"fec":[1152,0.5]}"#).starts_with("fec: invalid type: sequence"));
        assert!(refused(r#"{"paths":[["a",1]]}"#).starts_with("paths[0]: invalid type: sequence"));
        assert!(refused(r#"{"paths":[{"address":"a","port":1.5}]}"#).starts_with("paths[0].port"));
        assert!(refused(r#"{"min_paths":"2"}"#).starts_with("min_paths"));
        assert!(
            refused(r#"{"paths":[{"address":"a","port":1,"priority":-1}]}"#)
                .starts_with("paths[0].priority")
        );
        let r = parse(br#"{"min_paths":2.0,"fec":{"mtu":1200.0},"paths":[{"address":"a","port":571.0,"priority":7.0}]}"#)
            .unwrap();
        assert_eq!((r.min_paths, r.fec.unwrap().mtu), (Some(2), Some(1200)));
        let path = &r.paths.unwrap()[0];
        assert_eq!((path.port, path.priority), (571, Some(7)));
        let nulls = parse(br#"{"fec":null,"paths":null,"min_paths":null}"#).unwrap();
        assert!(nulls.fec.is_none() && nulls.paths.is_none() && nulls.min_paths.is_none());
    }

    #[test]
    fn defaults_apply() {
        let p = validate(req("{}")).unwrap();
        assert_eq!(p.mtu, 1152);
        assert_eq!(p.overhead, 0.35);
        assert!(p.paths.is_none());
        let p = validate(req(r#"{"paths": []}"#)).unwrap();
        assert!(p.paths.is_none());
    }

    #[test]
    fn every_range_error_names_its_field() {
        assert!(detail(validate(req(r#"{"fec":{"mtu":255}}"#))).starts_with("fec.mtu"));
        assert!(detail(validate(req(r#"{"fec":{"mtu":9001}}"#))).starts_with("fec.mtu"));
        assert!(
            detail(validate(req(r#"{"fec":{"repair_overhead":1.01}}"#)))
                .starts_with("fec.repair_overhead")
        );
        assert!(detail(validate(req(r#"{"min_paths":0}"#))).starts_with("min_paths"));
        assert!(detail(validate(req(r#"{"min_paths":9}"#))).starts_with("min_paths"));
        let long = "é".repeat(129);
        assert!(
            detail(validate(req(&format!(r#"{{"peer_hint":"{long}"}}"#)))).starts_with("peer_hint")
        );
        assert!(validate(req(&format!(r#"{{"peer_hint":"{}"}}"#, "é".repeat(128)))).is_ok());
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a b","port":1}]}"#)))
                .starts_with("paths[0].address")
        );
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a","port":0}]}"#)))
                .starts_with("paths[0].port")
        );
        assert!(
            detail(validate(req(r#"{"paths":[{"address":"a","port":65536}]}"#)))
                .starts_with("paths[0].port")
        );
        assert!(
            detail(validate(req(
                r#"{"paths":[{"address":"a","port":1,"id":"x"},{"address":"b","port":2,"id":"x"}]}"#
            )))
            .starts_with("paths[1].id")
        );
        let nine = (0..9)
            .map(|i| format!(r#"{{"address":"h{i}","port":1}}"#))
            .collect::<Vec<_>>()
            .join(",");
        assert!(detail(validate(req(&format!(r#"{{"paths":[{nine}]}}"#)))).starts_with("paths"));
    }

    #[test]
    fn paths_get_default_ids_and_priorities() {
        let p = validate(req(r#"{"paths":[{"address":"a","port":1},{"address":"10.0.0.1","port":2,"id":"b","priority":5}]}"#))
            .unwrap();
        let paths = p.paths.unwrap();
        assert_eq!(paths[0].id, "path-1");
        assert_eq!(paths[0].priority, 100);
        assert_eq!(paths[1].id, "b");
    }
}
