//! Where datasets live: a URL selects an `object_store` backend. Storage is untrusted: it only
//! ever sees ciphertext.
//!
//! - a path or `file:///abs/path` — the local file system (the default);
//! - `az://<container>/<path>` — Azure Blob Storage; account and key or SAS from the standard
//!   `AZURE_STORAGE_*` environment variables (`AZURE_STORAGE_USE_EMULATOR=true` and
//!   `AZURITE_BLOB_STORAGE_URL` for Azurite);
//! - `s3://<bucket>/<path>` — S3, credentials from the standard `AWS_*` variables.
//!
//! Credentials are read by the backends from the environment and never logged.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// A store and the object's path in it.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The URL as given, for messages (never contains credentials).
    pub url: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({})", self.url)
    }
}

/// Parses a dataset URL into a store and path.
pub fn locate(url: &str) -> Result<Location, StoreError> {
    let bad = |detail: &str| StoreError::BadUrl {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    if url.contains('@') || url.contains("sig=") {
        return Err(bad(
            "credentials do not belong in dataset URLs; use the environment",
        ));
    }
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("az") | Some("azure") | Some("abfs") => {
            let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build();
            cloud(url, store.map(|s| Arc::new(s) as Arc<dyn ObjectStore>))
        }
        Some("s3") => {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build();
            cloud(url, store.map(|s| Arc::new(s) as Arc<dyn ObjectStore>))
        }
        Some("file") | None => {
            let local = match scheme {
                Some(_) => url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| bad("not an absolute file:// URL"))?,
                None => PathBuf::from(url),
            };
            let absolute = if local.is_absolute() {
                local
            } else {
                std::env::current_dir()
                    .map_err(|e| bad(&e.to_string()))?
                    .join(local)
            };
            if absolute
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(bad("paths with .. are not accepted"));
            }
            let dir = absolute.parent().ok_or_else(|| bad("no file name"))?;
            std::fs::create_dir_all(dir).map_err(|e| bad(&e.to_string()))?;
            let name = absolute
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| bad("no file name"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
            Ok(Location {
                store: Arc::new(store),
                path: Path::from(name),
                url: url.into(),
            })
        }
        Some(other) => Err(bad(&format!(
            "unsupported scheme {other}: use a path, file://, az:// or s3://"
        ))),
    }
}

/// A cloud store from its builder's result; the object path is the URL's path.
fn cloud(
    url: &str,
    store: object_store::Result<Arc<dyn ObjectStore>>,
) -> Result<Location, StoreError> {
    let bad = |detail: String| StoreError::BadUrl {
        url: url.to_string(),
        detail,
    };
    let store = store.map_err(|e| bad(e.to_string()))?;
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let path = Path::from(parsed.path().trim_start_matches('/'));
    Ok(Location {
        store,
        path,
        url: url.into(),
    })
}
