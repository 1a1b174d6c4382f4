//! Tokens for the simulated users: signed here with the nodes' HS256 secret (`--secret`), or,
//! without one, fetched from a development-mode node's `GET /dev/token`.

use anyhow::{Context, Result};
use serde_json::json;

pub(crate) struct Tokens {
    secret: Option<String>,
    http: reqwest::Client,
}

impl Tokens {
    pub(crate) fn new(secret: Option<String>) -> Self {
        Tokens {
            secret,
            http: reqwest::Client::new(),
        }
    }

    /// A token for `user` (URL-safe characters only), valid for a day, from the node at
    /// `base` (`ws://host:port...`) when there is no secret.
    pub(crate) async fn token(&self, base: &str, user: &str) -> Result<String> {
        if let Some(secret) = &self.secret {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + 86_400;
            return Ok(jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({"sub": user, "exp": exp, "name": user, "publish": true}),
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )?);
        }
        let http_base = http_base(base);
        let res: serde_json::Value = self
            .http
            .get(format!("{http_base}/dev/token?user={user}&name={user}"))
            .send()
            .await
            .with_context(|| format!("GET {http_base}/dev/token"))?
            .error_for_status()
            .context("/dev/token (is the node in development mode? else give --secret)")?
            .json()
            .await?;
        res["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in /dev/token's answer")
    }
}

/// `ws://host:port/anything` -> `http://host:port`.
pub(crate) fn http_base(url: &str) -> String {
    let url = url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    match url.find("://").map(|i| i + 3) {
        Some(start) => match url[start..].find('/') {
            Some(slash) => url[..start + slash].to_owned(),
            None => url,
        },
        None => url,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_base() {
        assert_eq!(
            super::http_base("ws://127.0.0.1:8080/ws"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(super::http_base("ws://[::1]:9"), "http://[::1]:9");
    }
}
