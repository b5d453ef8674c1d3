//! Object storage, configured in **Thanos' objstore YAML** (`--objstore.config-file` / `--objstore.config`)
//! and opened with `object_store`:
//!
//! ```yaml
//! type: S3            # FILESYSTEM | S3 | GCS | AZURE (any case, as Thanos)
//! config:
//!   bucket: metrics
//!   endpoint: s3.eu-west-1.amazonaws.com   # host[:port], no scheme; `insecure: true` means http
//!   access_key: …
//!   secret_key: …
//! prefix: tenant-a    # optional: every object lives under it
//! ```
//!
//! Every key Thanos documents for these providers is accepted (unknown keys are errors, with line and
//! column). Keys that change what is written or how it is authenticated are honoured or, where
//! `object_store` cannot do it, refused with a message naming the key — never silently ignored. Pure
//! connection-tuning keys that have no equivalent (`max_idle_conns`, `expect_continue_timeout`, …) are
//! accepted and listed in [`Bucket::warnings`].
//!
//! Block objects have typed paths ([`BlockObject`]): `<ULID>/meta.json`, `<ULID>/index`,
//! `<ULID>/chunks/000001`, as Thanos lays them out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use meridian_core::{error::ConfigError, promfmt::PromDuration};

/// S3's smallest multipart part (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Part size when the config gives none: large enough for few requests, small enough that an upload
/// holds little memory (one part is buffered at a time per file).
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// An opened bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub store: Arc<dyn ObjectStore>,
    /// For logs: `s3://bucket/prefix`, `file:///dir`.
    pub description: String,
    /// Multipart part size; files up to this size are uploaded with one PUT.
    pub part_size: u64,
    /// Upload every file with one PUT (`disable_multipart`).
    pub disable_multipart: bool,
    /// `put_user_metadata` (S3): set on every object written.
    pub user_metadata: BTreeMap<String, String>,
    /// Keys accepted without effect.
    pub warnings: Vec<String>,
}

/// One object of a block in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockObject<'a> {
    Meta,
    Index,
    /// A chunk segment file by name (`000001`).
    Chunks(&'a str),
    /// Another file at the top of the block's directory (a mark).
    File(&'a str),
}

/// The bucket path of a block object (`<ULID>/meta.json`, …).
pub fn block_path(ulid: &str, object: BlockObject<'_>) -> ObjectPath {
    match object {
        BlockObject::Meta => ObjectPath::from_iter([ulid, "meta.json"]),
        BlockObject::Index => ObjectPath::from_iter([ulid, "index"]),
        BlockObject::Chunks(seg) => ObjectPath::from_iter([ulid, "chunks", seg]),
        BlockObject::File(name) => ObjectPath::from_iter([ulid, name]),
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed<C> {
    #[serde(rename = "type")]
    _kind: String,
    config: C,
    #[serde(default)]
    prefix: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FsConfig {
    #[serde(default)]
    directory: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    server_name: String,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    idle_conn_timeout: Option<PromDuration>,
    response_header_timeout: Option<PromDuration>,
    #[serde(default)]
    insecure_skip_verify: bool,
    tls_handshake_timeout: Option<PromDuration>,
    expect_continue_timeout: Option<PromDuration>,
    max_idle_conns: Option<u64>,
    max_idle_conns_per_host: Option<usize>,
    max_conns_per_host: Option<u64>,
    #[serde(default)]
    tls_config: TlsConfig,
    disable_compression: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Trace {
    #[serde(default)]
    enable: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SseConfig {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    kms_key_id: String,
    #[serde(default)]
    kms_encryption_context: BTreeMap<String, String>,
    #[serde(default)]
    encryption_key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct S3Config {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    disable_dualstack: bool,
    #[serde(default)]
    aws_sdk_auth: bool,
    #[serde(default)]
    access_key: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    signature_version2: bool,
    #[serde(default)]
    secret_key: String,
    #[serde(default)]
    session_token: String,
    #[serde(default)]
    put_user_metadata: BTreeMap<String, String>,
    #[serde(default)]
    http_config: HttpConfig,
    #[serde(default)]
    trace: Trace,
    #[serde(default)]
    list_objects_version: String,
    #[serde(default)]
    bucket_lookup_type: String,
    send_content_md5: Option<bool>,
    #[serde(default)]
    disable_multipart: bool,
    #[serde(default)]
    part_size: u64,
    #[serde(default)]
    sse_config: SseConfig,
    #[serde(default)]
    sts_endpoint: String,
    #[serde(default)]
    max_retries: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GcsConfig {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    service_account: String,
    #[serde(default)]
    use_grpc: bool,
    grpc_conn_pool_size: Option<u64>,
    #[serde(default)]
    http_config: HttpConfig,
    #[serde(default)]
    chunk_size_bytes: u64,
    #[serde(default)]
    max_retries: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AzureReaderConfig {
    max_retry_requests: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AzurePipelineConfig {
    max_tries: Option<usize>,
    try_timeout: Option<PromDuration>,
    retry_delay: Option<PromDuration>,
    max_retry_delay: Option<PromDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AzureConfig {
    #[serde(default)]
    storage_account: String,
    #[serde(default)]
    storage_account_key: String,
    #[serde(default)]
    storage_connection_string: String,
    #[serde(default)]
    storage_create_container: Option<bool>,
    #[serde(default)]
    container: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    user_assigned_id: String,
    #[serde(default)]
    max_retries: usize,
    #[serde(default)]
    reader_config: AzureReaderConfig,
    #[serde(default)]
    pipeline_config: AzurePipelineConfig,
    #[serde(default)]
    http_config: HttpConfig,
    #[serde(default)]
    msi_resource: String,
}

impl Bucket {
    /// Reads `--objstore.config-file`.
    pub fn from_file(path: &Path) -> Result<Bucket, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Bucket::parse(&text, &path.display().to_string())
    }

    /// Parses a config (`--objstore.config`); `source_name` names it in errors. Relative paths (a
    /// FILESYSTEM directory, TLS files) are relative to the working directory, as in Thanos.
    pub fn parse(text: &str, source_name: &str) -> Result<Bucket, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: source_name.to_owned(),
            message,
        };
        let head: Head = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        fn typed<C: serde::de::DeserializeOwned>(text: &str) -> Result<Typed<C>, String> {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())
        }
        // Each provider opens its store; the fields it does not set keep these defaults.
        let mut b = Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            description: String::new(),
            part_size: DEFAULT_PART_SIZE,
            disable_multipart: false,
            user_metadata: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let prefix = match head.kind.to_ascii_uppercase().as_str() {
            "FILESYSTEM" => {
                let t: Typed<FsConfig> = typed(text).map_err(err)?;
                let (store, dir) = filesystem(&t.config).map_err(err)?;
                (b.store, b.description) = (store, format!("file://{}", dir.display()));
                t.prefix
            }
            "S3" => {
                let t: Typed<S3Config> = typed(text).map_err(err)?;
                let c = &t.config;
                b.store = s3(c, &mut b.warnings).map_err(err)?;
                b.description = format!("s3://{}", c.bucket);
                b.part_size = part_size(c.part_size, "config.part_size").map_err(err)?;
                b.disable_multipart = c.disable_multipart;
                b.user_metadata.clone_from(&c.put_user_metadata);
                t.prefix
            }
            "GCS" => {
                let t: Typed<GcsConfig> = typed(text).map_err(err)?;
                let c = &t.config;
                b.store = gcs(c, &mut b.warnings).map_err(err)?;
                b.description = format!("gs://{}", c.bucket);
                b.part_size =
                    part_size(c.chunk_size_bytes, "config.chunk_size_bytes").map_err(err)?;
                t.prefix
            }
            "AZURE" => {
                let t: Typed<AzureConfig> = typed(text).map_err(err)?;
                (b.store, b.description) = azure(&t.config, &mut b.warnings).map_err(err)?;
                t.prefix
            }
            other => {
                return Err(err(format!(
                    "type {other:?} is not supported: use FILESYSTEM, S3, GCS or AZURE"
                )));
            }
        };
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            let p =
                ObjectPath::parse(prefix).map_err(|e| err(format!("prefix {prefix:?}: {e}")))?;
            b.store = Arc::new(PrefixStore::new(b.store, p));
            b.description = format!("{}/{prefix}", b.description);
        }
        Ok(b)
    }
}

fn part_size(v: u64, field: &str) -> Result<u64, String> {
    match v {
        0 => Ok(DEFAULT_PART_SIZE),
        v if v < MIN_PART_SIZE => Err(format!(
            "{field}: {v} bytes is below the 5 MiB minimum part size"
        )),
        v => Ok(v),
    }
}

fn filesystem(c: &FsConfig) -> Result<(Arc<dyn ObjectStore>, PathBuf), String> {
    if c.directory.is_empty() {
        return Err("config.directory: required for FILESYSTEM".into());
    }
    let dir = PathBuf::from(&c.directory);
    std::fs::create_dir_all(&dir).map_err(|e| format!("config.directory {dir:?}: {e}"))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("config.directory {dir:?}: {e}"))?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| format!("config.directory {dir:?}: {e}"))?
        // Objects appear only complete (written to a temporary file, then renamed).
        .with_automatic_cleanup(true)
        // Durable on return, like a remote object store: meta.json is never on disk before the files it
        // describes.
        .with_fsync(true);
    Ok((Arc::new(store), dir))
}

/// HTTP client settings shared by the cloud providers.
fn client_options(h: &HttpConfig, warnings: &mut Vec<String>) -> Result<ClientOptions, String> {
    let mut o = ClientOptions::new();
    if let Some(d) = h.idle_conn_timeout {
        o = o.with_pool_idle_timeout(d.0);
    }
    // Requests carry whole parts, so the request timeout is the response header timeout plus room for
    // the body; 2m (Thanos' default) when unset.
    let t = h
        .response_header_timeout
        .map_or(Duration::from_secs(120), |d| d.0);
    o = o.with_timeout(t + Duration::from_secs(60));
    if let Some(d) = h.tls_handshake_timeout {
        o = o.with_connect_timeout(d.0);
    }
    if let Some(n) = h.max_idle_conns_per_host {
        o = o.with_pool_max_idle_per_host(n);
    }
    if h.insecure_skip_verify || h.tls_config.insecure_skip_verify {
        o = o.with_allow_invalid_certificates(true);
    }
    if !h.tls_config.ca_file.is_empty() {
        let pem = std::fs::read(&h.tls_config.ca_file).map_err(|e| {
            format!(
                "config.http_config.tls_config.ca_file {:?}: {e}",
                h.tls_config.ca_file
            )
        })?;
        for c in object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "config.http_config.tls_config.ca_file {:?}: {e}",
                h.tls_config.ca_file
            )
        })? {
            o = o.with_root_certificate(c);
        }
    }
    for (set, key) in [
        (
            !h.tls_config.cert_file.is_empty(),
            "http_config.tls_config.cert_file",
        ),
        (
            !h.tls_config.key_file.is_empty(),
            "http_config.tls_config.key_file",
        ),
        (
            !h.tls_config.server_name.is_empty(),
            "http_config.tls_config.server_name",
        ),
    ] {
        if set {
            return Err(format!(
                "config.{key}: client certificates and server-name overrides for object storage are not supported"
            ));
        }
    }
    for (set, key) in [
        (
            h.expect_continue_timeout.is_some(),
            "expect_continue_timeout",
        ),
        (h.max_idle_conns.is_some(), "max_idle_conns"),
        (h.max_conns_per_host.is_some(), "max_conns_per_host"),
        (h.disable_compression.is_some(), "disable_compression"),
    ] {
        if set {
            warnings.push(format!("config.http_config.{key} has no effect"));
        }
    }
    Ok(o)
}

fn retry(max_retries: usize) -> RetryConfig {
    let mut r = RetryConfig::default();
    if max_retries > 0 {
        r.max_retries = max_retries;
    }
    r
}

fn s3(c: &S3Config, warnings: &mut Vec<String>) -> Result<Arc<dyn ObjectStore>, String> {
    if c.bucket.is_empty() {
        return Err("config.bucket: required for S3".into());
    }
    if c.signature_version2 {
        return Err("config.signature_version2: only AWS Signature Version 4 is supported".into());
    }
    if !matches!(c.list_objects_version.as_str(), "" | "v2") {
        return Err(format!(
            "config.list_objects_version {:?}: only ListObjectsV2 is supported",
            c.list_objects_version
        ));
    }
    if !c.sts_endpoint.is_empty() {
        return Err("config.sts_endpoint: a custom STS endpoint is not supported".into());
    }
    if c.endpoint.contains("://") || c.endpoint.contains('/') {
        return Err(format!(
            "config.endpoint {:?}: give host[:port] without a scheme or path (`insecure: true` selects http)",
            c.endpoint
        ));
    }
    match (c.access_key.is_empty(), c.secret_key.is_empty()) {
        (false, true) => {
            return Err("config.secret_key: required when access_key is set".into());
        }
        (true, false) => {
            return Err("config.access_key: required when secret_key is set".into());
        }
        _ => {}
    }
    // Credentials: the config's keys, else the AWS chain (environment, web identity, instance
    // metadata), as Thanos does.
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&c.bucket);
    if !c.access_key.is_empty() {
        b = b
            .with_access_key_id(&c.access_key)
            .with_secret_access_key(&c.secret_key);
        if !c.session_token.is_empty() {
            b = b.with_token(&c.session_token);
        }
    }
    if !c.region.is_empty() {
        b = b.with_region(&c.region);
    }
    let aws = c.endpoint.is_empty() || c.endpoint.ends_with("amazonaws.com");
    let virtual_hosted = match c.bucket_lookup_type.as_str() {
        // minio-go's "auto": virtual-hosted style for AWS, path style elsewhere.
        "" | "auto" => aws,
        "virtual-hosted" => true,
        "path" => false,
        other => {
            return Err(format!(
                "config.bucket_lookup_type {other:?}: use auto, virtual-hosted or path"
            ));
        }
    };
    if !c.endpoint.is_empty() {
        let scheme = if c.insecure { "http" } else { "https" };
        let url = if virtual_hosted {
            format!("{scheme}://{}.{}", c.bucket, c.endpoint)
        } else {
            format!("{scheme}://{}", c.endpoint)
        };
        b = b.with_endpoint(url);
    }
    b = b
        .with_virtual_hosted_style_request(virtual_hosted && !c.endpoint.is_empty())
        .with_retry(retry(c.max_retries))
        .with_client_options(client_options(&c.http_config, warnings)?.with_allow_http(c.insecure));
    match c.sse_config.kind.as_str() {
        "" => {}
        "SSE-S3" => {
            let key: object_store::aws::AmazonS3ConfigKey = "aws_server_side_encryption"
                .parse()
                .map_err(|e| format!("config.sse_config: {e}"))?;
            b = b.with_config(key, "AES256");
        }
        "SSE-KMS" => {
            if c.sse_config.kms_key_id.is_empty() {
                return Err("config.sse_config.kms_key_id: required for SSE-KMS".into());
            }
            if !c.sse_config.kms_encryption_context.is_empty() {
                return Err(
                    "config.sse_config.kms_encryption_context: not supported; AWS' default context is used"
                        .into(),
                );
            }
            b = b.with_sse_kms_encryption(&c.sse_config.kms_key_id);
        }
        "SSE-C" => {
            if c.sse_config.encryption_key.is_empty() {
                return Err(
                    "config.sse_config.encryption_key: the path of the key file is required for SSE-C"
                        .into(),
                );
            }
            let key = std::fs::read(&c.sse_config.encryption_key).map_err(|e| {
                format!(
                    "config.sse_config.encryption_key {:?}: {e}",
                    c.sse_config.encryption_key
                )
            })?;
            use base64::Engine as _;
            b = b.with_ssec_encryption(base64::engine::general_purpose::STANDARD.encode(key));
        }
        other => {
            return Err(format!(
                "config.sse_config.type {other:?}: use SSE-S3, SSE-KMS or SSE-C"
            ));
        }
    }
    for (set, key) in [
        (c.disable_dualstack, "disable_dualstack"),
        (c.trace.enable, "trace.enable"),
        (c.send_content_md5.is_some(), "send_content_md5"),
    ] {
        if set {
            warnings.push(format!("config.{key} has no effect"));
        }
    }
    let _ = c.aws_sdk_auth; // The AWS chain is used whenever no keys are configured.
    let store = b
        .build()
        .map_err(|e| format!("S3 bucket {:?}: {e}", c.bucket))?;
    Ok(Arc::new(store))
}

fn gcs(c: &GcsConfig, warnings: &mut Vec<String>) -> Result<Arc<dyn ObjectStore>, String> {
    if c.bucket.is_empty() {
        return Err("config.bucket: required for GCS".into());
    }
    if c.use_grpc {
        return Err("config.use_grpc: only the JSON API is supported".into());
    }
    if c.grpc_conn_pool_size.is_some() {
        warnings.push("config.grpc_conn_pool_size has no effect".into());
    }
    // Credentials: the inline service account, else Application Default Credentials.
    let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&c.bucket);
    if !c.service_account.is_empty() {
        b = b.with_service_account_key(&c.service_account);
    }
    let store = b
        .with_retry(retry(c.max_retries))
        .with_client_options(client_options(&c.http_config, warnings)?)
        .build()
        .map_err(|e| format!("GCS bucket {:?}: {e}", c.bucket))?;
    Ok(Arc::new(store))
}

/// `AccountName=…;AccountKey=…;BlobEndpoint=…` → pairs.
fn connection_string(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn azure(
    c: &AzureConfig,
    warnings: &mut Vec<String>,
) -> Result<(Arc<dyn ObjectStore>, String), String> {
    if c.container.is_empty() {
        return Err("config.container: required for AZURE".into());
    }
    let mut account = c.storage_account.clone();
    let mut key = c.storage_account_key.clone();
    let mut blob_endpoint = None;
    if !c.storage_connection_string.is_empty() {
        let cs = connection_string(&c.storage_connection_string);
        if let Some(a) = cs.get("AccountName") {
            account.clone_from(a);
        }
        if let Some(k) = cs.get("AccountKey") {
            key.clone_from(k);
        }
        blob_endpoint = cs.get("BlobEndpoint").cloned();
    }
    if account.is_empty() {
        return Err(
            "config.storage_account: required for AZURE (or AccountName in storage_connection_string)"
                .into(),
        );
    }
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_account(&account)
        .with_container_name(&c.container);
    if !key.is_empty() {
        b = b.with_access_key(&key);
    } else if !c.user_assigned_id.is_empty() {
        // A user-assigned managed identity.
        b = b.with_client_id(&c.user_assigned_id);
    }
    let endpoint = match blob_endpoint {
        Some(e) => Some(e),
        None if !c.endpoint.is_empty() && c.endpoint != "blob.core.windows.net" => {
            Some(format!("https://{account}.{}", c.endpoint))
        }
        None => None,
    };
    if let Some(e) = &endpoint {
        b = b
            .with_endpoint(e.clone())
            .with_allow_http(e.starts_with("http://"));
    }
    let mut max_retries = c.max_retries;
    if let Some(t) = c.pipeline_config.max_tries {
        max_retries = max_retries.max(t.saturating_sub(1));
    }
    for (set, k) in [
        (
            c.storage_create_container.is_some(),
            "storage_create_container",
        ),
        (
            c.reader_config.max_retry_requests.is_some(),
            "reader_config.max_retry_requests",
        ),
        (
            c.pipeline_config.try_timeout.is_some(),
            "pipeline_config.try_timeout",
        ),
        (
            c.pipeline_config.retry_delay.is_some(),
            "pipeline_config.retry_delay",
        ),
        (
            c.pipeline_config.max_retry_delay.is_some(),
            "pipeline_config.max_retry_delay",
        ),
        (!c.msi_resource.is_empty(), "msi_resource"),
    ] {
        if set {
            warnings.push(format!("config.{k} has no effect"));
        }
    }
    let store = b
        .with_retry(retry(max_retries))
        .with_client_options(client_options(&c.http_config, warnings)?)
        .build()
        .map_err(|e| format!("Azure container {:?}: {e}", c.container))?;
    Ok((
        Arc::new(store),
        format!("azure://{account}/{}", c.container),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Bucket, String> {
        Bucket::parse(text, "objstore.yml").map_err(|e| e.to_string())
    }

    #[test]
    fn filesystem_with_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let b = parse(&format!(
            "type: filesystem\nconfig:\n  directory: {}\nprefix: /tenant-0/p/\n",
            dir.path().join("bucket").display()
        ))
        .unwrap();
        assert!(
            b.description.ends_with("/bucket/tenant-0/p"),
            "{}",
            b.description
        );
        assert_eq!(b.part_size, DEFAULT_PART_SIZE);
    }

    #[test]
    fn s3_every_documented_key_is_accepted() {
        let b = parse(
            r#"type: S3
config:
  bucket: "metrics"
  endpoint: "127.0.0.1:9000"
  region: "eu-west-1"
  disable_dualstack: false
  aws_sdk_auth: false
  access_key: "k"
  insecure: true
  signature_version2: false
  secret_key: "s"
  session_token: ""
  put_user_metadata: {team: platform}
  http_config:
    idle_conn_timeout: 1m30s
    response_header_timeout: 2m
    insecure_skip_verify: false
    tls_handshake_timeout: 10s
    expect_continue_timeout: 1s
    max_idle_conns: 100
    max_idle_conns_per_host: 100
    max_conns_per_host: 0
    tls_config:
      ca_file: ""
      cert_file: ""
      key_file: ""
      server_name: ""
      insecure_skip_verify: false
    disable_compression: false
  trace:
    enable: false
  list_objects_version: ""
  bucket_lookup_type: auto
  send_content_md5: true
  disable_multipart: false
  part_size: 67108864
  sse_config:
    type: ""
    kms_key_id: ""
    kms_encryption_context: {}
    encryption_key: ""
  sts_endpoint: ""
  max_retries: 0
prefix: ""
"#,
        )
        .unwrap();
        assert_eq!(b.description, "s3://metrics");
        assert_eq!(b.part_size, 64 << 20);
        assert_eq!(b.user_metadata["team"], "platform");
        assert!(
            b.warnings.iter().any(|w| w.contains("max_idle_conns")),
            "{:?}",
            b.warnings
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("type: SWIFT\nconfig: {}\n", "\"SWIFT\" is not supported"),
            ("type: S3\nconfig:\n  bucket: b\n  bukket: x\n", "bukket"),
            (
                "type: S3\nconfig:\n  endpoint: x\n",
                "config.bucket: required",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  endpoint: http://x:9000\n",
                "without a scheme",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  access_key: a\n",
                "config.secret_key",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  signature_version2: true\n",
                "signature_version2",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  bucket_lookup_type: dns\n",
                "bucket_lookup_type",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  part_size: 1000\n",
                "config.part_size",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  sse_config: {type: SSE-KMS}\n",
                "kms_key_id",
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  http_config: {idle_conn_timeout: soon}\n",
                "soon",
            ),
            ("type: FILESYSTEM\nconfig: {}\n", "config.directory"),
            (
                "type: GCS\nconfig:\n  bucket: b\n  use_grpc: true\n",
                "use_grpc",
            ),
            ("type: AZURE\nconfig:\n  container: c\n", "storage_account"),
            ("config: {}\n", "type"),
        ];
        for (text, want) in cases {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("objstore.yml: "), "{e}");
        }
        // Unknown keys are located.
        let e = parse("type: S3\nconfig:\n  bucket: b\n  bukket: x\n")
            .err()
            .unwrap();
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn azure_connection_string_and_gcs() {
        let b = parse(
            "type: AZURE\nconfig:\n  container: metrics\n  storage_connection_string: \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;\"\n",
        )
        .unwrap();
        assert_eq!(b.description, "azure://devstoreaccount1/metrics");
        let b = parse("type: gcs\nconfig:\n  bucket: metrics\n  service_account: \"\"\n").unwrap();
        assert_eq!(b.description, "gs://metrics");
    }

    #[test]
    fn block_paths() {
        assert_eq!(
            block_path("01A", BlockObject::Chunks("000001")).as_ref(),
            "01A/chunks/000001"
        );
        assert_eq!(
            block_path("01A", BlockObject::Meta).as_ref(),
            "01A/meta.json"
        );
        assert_eq!(block_path("01A", BlockObject::Index).as_ref(), "01A/index");
    }
}
