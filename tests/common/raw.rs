//! Raw HTTP requests, sent as they are written (nothing added), and the differential check that
//! ddbcache answers one exactly as the engine answers it directly.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0";
pub const DATE: &str = "20200101T000000Z";

/// A raw request: nothing is added to what it says.
#[derive(Clone, Debug)]
pub struct Raw {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Raw {
    pub fn new(method: Method) -> Raw {
        Raw {
            method,
            path: "/".into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A signed POST of `target` with a JSON body, as an SDK sends it.
    pub fn op(target: &str, body: &str) -> Raw {
        Raw::new(Method::POST)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target)
            .header("authorization", AUTH)
            .header("x-amz-date", DATE)
            .body(Bytes::copy_from_slice(body.as_bytes()))
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Raw {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn without(mut self, name: &str) -> Raw {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Raw {
        self.body = body.into();
        self
    }

    pub fn path(mut self, path: &str) -> Raw {
        self.path = path.into();
        self
    }

    pub async fn send(&self, endpoint: &str) -> Answer {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(format!("{endpoint}{}", self.path))
            .body(Full::new(self.body.clone()))
            .unwrap();
        for (name, value) in &self.headers {
            req.headers_mut()
                .append(*name, http::HeaderValue::from_str(value).unwrap());
        }
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let (parts, body) = client.request(req).await.expect("request").into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Headers whose presence and value a client can tell apart.
pub const COMPARED: &[&str] = &["content-type", "content-length", "x-amz-crc32"];

/// CORS headers: compared when the request has an `Origin` (DynamoDB sends them only then; moto
/// sends `Access-Control-Allow-Origin` always, which a cache hit does not imitate).
pub const COMPARED_WITH_ORIGIN: &[&str] = &[
    "access-control-allow-origin",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-max-age",
];

/// Sends `req` through ddbcache and directly, and asserts the answers are the same: status,
/// body (JSON compared as JSON, so that key order in engine-made bodies does not matter), the
/// headers in [`COMPARED`] (and [`COMPARED_WITH_ORIGIN`]), and the shape of the request id.
pub async fn same(proxy: &str, engine: &str, req: &Raw) -> Answer {
    let through = req.send(proxy).await;
    let direct = req.send(engine).await;
    let what = format!("{} {} {:?}", req.method, req.path, req.headers);
    assert_eq!(through.status, direct.status, "status of {what}");
    match (
        serde_json::from_slice::<serde_json::Value>(&through.body),
        serde_json::from_slice::<serde_json::Value>(&direct.body),
    ) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "body of {what}"),
        _ => assert_eq!(through.body, direct.body, "body of {what}"),
    }
    let cors = req.headers.iter().any(|(n, _)| *n == "origin");
    let compared = COMPARED
        .iter()
        .chain(cors.then_some(COMPARED_WITH_ORIGIN).into_iter().flatten());
    for name in compared {
        assert_eq!(
            through.header(name),
            direct.header(name),
            "header {name} of {what}"
        );
    }
    // Request ids differ, but where the engine sends one, so does ddbcache, in its shape.
    let id_len = |a: &Answer| a.header("x-amzn-requestid").map(str::len);
    assert_eq!(id_len(&through), id_len(&direct), "request id of {what}");
    through
}
