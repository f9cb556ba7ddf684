//! Reads instant values from the Prometheus HTTP API (`/api/v1/query`).

use serde::Deserialize;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("Prometheus at {url} did not answer: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("Prometheus answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Prometheus query failed ({error_type}): {error}")]
    Query { error_type: String, error: String },
    #[error("unexpected Prometheus answer: {0}")]
    Malformed(String),
}

/// How long connecting to Prometheus may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Prometheus HTTP client with a bounded request time.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

impl Prometheus {
    /// A client whose every query gives up after `timeout` in all, and after a few seconds
    /// (at most `timeout`) when no connection can be made.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .timeout(timeout)
            .build()
            .expect("a TLS backend is compiled in");
        Self { http }
    }

    /// The answer's data of an instant query.
    async fn query(&self, base_url: &str, query: &str) -> Result<Option<Data>, QueryError> {
        let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|source| QueryError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| QueryError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(answer) => answer,
            Err(_) if !status.is_success() => {
                return Err(QueryError::Status {
                    status: status.as_u16(),
                    body: body.chars().take(200).collect(),
                });
            }
            Err(err) => return Err(QueryError::Malformed(err.to_string())),
        };
        if answer.status != "success" {
            return Err(QueryError::Query {
                error_type: answer.error_type.unwrap_or_default(),
                error: answer.error.unwrap_or_default(),
            });
        }
        Ok(answer.data)
    }

    /// The query's value now: the sum over a vector result (an empty vector is zero demand),
    /// or the scalar.
    pub async fn instant(&self, base_url: &str, query: &str) -> Result<f64, QueryError> {
        let data = self.query(base_url, query).await?;
        let parse = |text: &str| {
            text.parse::<f64>()
                .map_err(|_| QueryError::Malformed(format!("value {text:?}")))
        };
        match data {
            Some(Data::Vector(samples)) => {
                let mut sum = 0.0;
                for sample in samples {
                    let v = parse(&sample.value.1)?;
                    // NaN (e.g. a rate over no samples) carries no demand.
                    if v.is_finite() {
                        sum += v;
                    }
                }
                Ok(sum)
            }
            Some(Data::Scalar((_, text))) => parse(&text),
            Some(Data::Matrix(_) | Data::String(_)) => Err(QueryError::Malformed(
                "the query must return an instant vector or a scalar".into(),
            )),
            None => Err(QueryError::Malformed("no data".into())),
        }
    }
    /// A measurement now: the sum of the finite samples of a vector result, or the scalar;
    /// `None` when there is no data (an empty vector, or only NaN, as a ratio over no requests
    /// gives), which an analysis must not read as zero.
    pub async fn measure(&self, base_url: &str, query: &str) -> Result<Option<f64>, QueryError> {
        let data = self.query(base_url, query).await?;
        measured(data)
    }
}

/// The value of an instant query's data for a measurement (see [`Prometheus::measure`]).
fn measured(data: Option<Data>) -> Result<Option<f64>, QueryError> {
    let parse = |text: &str| {
        text.parse::<f64>()
            .map_err(|_| QueryError::Malformed(format!("value {text:?}")))
    };
    match data {
        Some(Data::Vector(samples)) => {
            let mut sum = None;
            for sample in samples {
                let v = parse(&sample.value.1)?;
                if v.is_finite() {
                    sum = Some(sum.unwrap_or(0.0) + v);
                }
            }
            Ok(sum)
        }
        Some(Data::Scalar((_, text))) => Ok(Some(parse(&text)?).filter(|v| v.is_finite())),
        Some(Data::Matrix(_) | Data::String(_)) => Err(QueryError::Malformed(
            "the query must return an instant vector or a scalar".into(),
        )),
        None => Ok(None),
    }
}

/// Replaces `$namespace`, `$deployment` and `$component` in a policy's query.
pub fn expand_query(query: &str, namespace: &str, deployment: &str, component: &str) -> String {
    query
        .replace("$namespace", namespace)
        .replace("$deployment", deployment)
        .replace("$component", component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced() {
        assert_eq!(
            expand_query(
                r#"sum(rate(x{ns="$namespace",d="$deployment",c="$component"}[1m]))"#,
                "shop",
                "ranker",
                "r"
            ),
            r#"sum(rate(x{ns="shop",d="ranker",c="r"}[1m]))"#
        );
    }

    #[test]
    fn a_measurement_without_data_is_none_not_zero() {
        let parse = |text: &str| -> Option<Data> {
            let answer: Answer = serde_json::from_str(text).unwrap();
            answer.data
        };
        let empty = parse(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        assert_eq!(measured(empty).unwrap(), None);
        let nan = parse(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"NaN"]}]}}"#,
        );
        assert_eq!(measured(nan).unwrap(), None);
        let zero = parse(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"0"]},{"metric":{},"value":[1.0,"NaN"]}]}}"#,
        );
        assert_eq!(measured(zero).unwrap(), Some(0.0));
        let scalar =
            parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"0.25"]}}"#);
        assert_eq!(measured(scalar).unwrap(), Some(0.25));
        assert_eq!(measured(None).unwrap(), None);
    }

    #[test]
    fn vector_answers_parse() {
        let answer: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"12.5"]},{"metric":{"a":"b"},"value":[1.0,"NaN"]}]}}"#,
        )
        .unwrap();
        let Some(Data::Vector(samples)) = answer.data else {
            panic!("vector")
        };
        assert_eq!(samples.len(), 2);
    }
}
