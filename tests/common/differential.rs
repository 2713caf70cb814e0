//! Differential testing: the same call through ddbcache and directly, on two engines of the same
//! kind in the same state, and the answers compared. "Same answer as direct" is shown this way.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::Client;
use ddbcache::config::Config;

use super::{sdk_client, start_proxy_with, Engine, TestProxy};

/// Two engines of the same kind, one behind ddbcache and one reached directly. The same calls go
/// to both, so their answers must match.
pub struct Pair {
    pub proxied: Client,
    pub direct: Client,
    pub proxy: TestProxy,
    pub engines: (Engine, Engine),
}

impl Pair {
    pub async fn dynalite() -> Pair {
        Pair::with(Engine::dynalite().await, Engine::dynalite().await).await
    }

    pub async fn moto() -> Pair {
        Pair::with(Engine::moto().await, Engine::moto().await).await
    }

    pub async fn with(behind: Engine, direct: Engine) -> Pair {
        Pair::with_config(behind, direct, |_| {}).await
    }

    /// A pair whose proxy runs with an edited config.
    pub async fn with_config(
        behind: Engine,
        direct: Engine,
        edit: impl FnOnce(&mut Config),
    ) -> Pair {
        let proxy = start_proxy_with(&behind.endpoint(), edit).await;
        Pair {
            proxied: sdk_client(&proxy.endpoint).await,
            direct: sdk_client(&direct.endpoint()).await,
            proxy,
            engines: (behind, direct),
        }
    }
}

/// An answer reduced to what must be equal: the output's view, or the error's code and message.
pub fn outcome<T, E, V>(
    call: &str,
    result: Result<T, E>,
    view: impl FnOnce(T) -> V,
) -> Result<V, String>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    result.map(view).map_err(|e| match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => panic!("{call}: an error without a DynamoDB error code: {e:?}"),
    })
}

/// Makes the call on both sides of a [`Pair`], asserts that the views of the answers are equal,
/// and returns the view (or the error code both sides got).
#[macro_export]
macro_rules! both {
    ($pair:expr, |$c:ident| $call:expr, |$o:ident| $view:expr) => {{
        let via_proxy = {
            let $c = &$pair.proxied;
            $crate::common::differential::outcome(stringify!($call), $call.await, |$o| $view)
        };
        let direct = {
            let $c = &$pair.direct;
            $crate::common::differential::outcome(stringify!($call), $call.await, |$o| $view)
        };
        assert_eq!(via_proxy, direct, "{}", stringify!($call));
        via_proxy
    }};
}

/// [`both!`] for a call that succeeds: returns the view.
#[macro_export]
macro_rules! same {
    ($($t:tt)*) => {
        $crate::both!($($t)*).unwrap_or_else(|code| panic!("failed through the proxy and directly: {code}"))
    };
}

/// [`both!`] for a call that fails: returns the error code.
#[macro_export]
macro_rules! same_error {
    ($($t:tt)*) => {
        $crate::both!($($t)*).map(|_| ()).expect_err("succeeded through the proxy and directly")
    };
}
