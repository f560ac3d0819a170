//! Exports under an S3 prefix, read with the AWS SDK and the standard credential chain.
//!
//! Checksums: an object uploaded in one piece, or in parts with a full-object checksum,
//! is checked by the SDK as it downloads. One uploaded in parts with a checksum per
//! part (composite: what boto3 and most uploaders send above 8 MiB) cannot be checked
//! whole while streaming; it is downloaded without asking S3 for the checksum, rather
//! than have the SDK warn on every run, and the run says at debug what it checks
//! instead: the size, the ETag (If-Match on every request) and the content's SHA-256,
//! which it records. See
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>.

use super::object::{Body, ObjectMeta, Source, SourceError, StoredChecksum, is_export_key};
use super::resume::{Reopen, Resuming};
use crate::config::S3Settings;
use crate::error::one_line;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::{BehaviorVersion, Region, meta::region::RegionProviderChain};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    ConfigBag, Intercept, ResponseChecksumValidation, RuntimeComponents,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::ChecksumType;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use chrono::{DateTime, Utc};
use tracing::{debug, warn};

/// Cleeng's delivery region, the default when nothing else names one.
const DEFAULT_REGION: &str = "us-west-2";

/// Exports under `s3://bucket/prefix`.
pub struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
    resume_attempts: u32,
}

impl S3Source {
    /// Builds the client: region from the settings, else `AWS_REGION` or the profile,
    /// else us-west-2 (not the instance's region from IMDS: the bucket is Cleeng's
    /// delivery bucket, wherever this runs); a custom endpoint (settings, `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`) switches to path-style addressing, as LocalStack needs.
    /// Requests are retried, timed out and watched for stalls as `settings` say.
    pub async fn new(bucket: &str, prefix: &str, settings: &S3Settings) -> S3Source {
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_else(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .or_else(Region::new(DEFAULT_REGION));
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .http_client(https);
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let custom_endpoint = settings.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.request_timeout)
                    .operation_attempt_timeout(settings.request_timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(settings.stall_timeout)
                    .build(),
            )
            .interceptor(LogRetries)
            .build();
        S3Source {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            resume_attempts: settings.resume_attempts,
        }
    }
}

impl Source for S3Source {
    async fn list(&self) -> Result<Vec<ObjectMeta>, SourceError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| SourceError::List {
                location: self.location(),
                detail: describe(&e),
            })?;
            for object in page.contents() {
                let Some(key) = object.key().filter(|k| is_export_key(k)) else {
                    continue;
                };
                let last_modified = object
                    .last_modified()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                let etag = object.e_tag().unwrap_or_default();
                objects.push(ObjectMeta {
                    key: key.to_string(),
                    checksum: stored_checksum(object.checksum_type(), etag),
                    etag: etag.to_string(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified,
                });
            }
        }
        Ok(objects)
    }

    async fn open(&self, object: &ObjectMeta) -> Result<Body, SourceError> {
        if let StoredChecksum::Composite { parts } = object.checksum {
            let parts = parts.map_or_else(|| "several".to_string(), |n| n.to_string());
            debug!(object = %object.key, "the export was uploaded in {parts} parts with a checksum per part, \
                which no download can check whole: the run checks its size, its ETag (If-Match) and \
                the SHA-256 of its content instead");
        }
        let version = Version {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            etag: object.etag.clone(),
            composite: matches!(object.checksum, StoredChecksum::Composite { .. }),
        };
        let first = version.get(0).await?;
        let reopen: Reopen = Box::new(move |from| {
            let version = version.clone();
            Box::pin(async move { version.get(from).await })
        });
        Ok(Box::new(Resuming::new(
            &object.key,
            object.size,
            first,
            self.resume_attempts,
            reopen,
        )))
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// One version of one object: what a download, and each resumption of it, reads.
#[derive(Clone)]
struct Version {
    client: Client,
    bucket: String,
    key: String,
    /// The ETag as listed; empty if the listing gave none.
    etag: String,
    /// Its checksum is per part: not asked for, since nothing could check it.
    composite: bool,
}

impl Version {
    /// The object's bytes from `from` on. If-Match: if the object was replaced since it
    /// was listed, fail rather than apply (or splice in) content that does not belong
    /// to the ETag we record.
    async fn get(&self, from: u64) -> Result<Body, SourceError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(&self.key);
        if !self.etag.is_empty() {
            request = request.if_match(&self.etag);
        }
        if from > 0 {
            request = request.range(format!("bytes={from}-"));
        }
        let sent = if self.composite {
            request
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
                )
                .send()
                .await
        } else {
            request.send().await
        };
        let output = sent.map_err(|e| SourceError::Open {
            location: format!("s3://{}/", self.bucket),
            key: self.key.clone(),
            detail: describe(&e),
        })?;
        Ok(Box::new(output.body.into_async_read()))
    }
}

/// What an object's checksum covers: the listing's checksum type when S3 gives it, else
/// the ETag, whose `-N` suffix marks an upload in N parts.
fn stored_checksum(kind: Option<&ChecksumType>, etag: &str) -> StoredChecksum {
    let parts = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u32>().ok());
    match kind {
        Some(ChecksumType::FullObject) => StoredChecksum::Whole,
        Some(ChecksumType::Composite) => StoredChecksum::Composite { parts },
        _ if parts.is_some() => StoredChecksum::Composite { parts },
        _ => StoredChecksum::Whole,
    }
}

/// Says in the logs (and the metrics) that the SDK tries a request again, and why
/// the attempt before failed: throttling or an outage should be visible even when
/// the run succeeds in the end.
#[derive(Debug)]
struct LogRetries;

/// Why the last attempt of a request failed, kept between attempts.
#[derive(Debug, Clone)]
struct LastFailure(String);

impl Storable for LastFailure {
    type Storer = StoreReplace<Self>;
}

impl Intercept for LogRetries {
    fn name(&self) -> &'static str {
        "LogRetries"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if attempt > 1 {
            let operation = cfg.load::<Metadata>().map_or("S3", |m| m.name());
            let reason = cfg
                .load::<LastFailure>()
                .map_or("unknown", |f| f.0.as_str());
            crate::metrics::s3_retry(operation);
            warn!(operation, attempt, reason, "retrying S3 request");
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let failure = match (context.response(), context.output_or_error()) {
            (Some(response), _) if !response.status().is_success() => {
                Some(format!("HTTP {}", response.status().as_u16()))
            }
            (_, Some(Err(e))) => Some(one_line(e)),
            _ => None,
        };
        if let Some(failure) = failure {
            cfg.interceptor_state().store_put(LastFailure(failure));
        }
        Ok(())
    }
}

/// One line on what went wrong with a request: the service's code and message, or
/// the chain of causes of a failure to reach it (without the raw response).
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> String {
    if let Some(service) = err.as_service_error() {
        return match (service.code(), service.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => service.to_string(),
        };
    }
    one_line(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_per_part_is_told_by_the_listing_or_else_by_the_etag() {
        let single = "\"9b2cf535f27731c974343645a3985328\"";
        let three = "\"d41d8cd98f00b204e9800998ecf8427e-3\"";
        assert_eq!(stored_checksum(None, single), StoredChecksum::Whole);
        assert_eq!(
            stored_checksum(None, three),
            StoredChecksum::Composite { parts: Some(3) }
        );
        // A multipart upload with a full-object checksum (CRC64NVME) can be checked.
        assert_eq!(
            stored_checksum(Some(&ChecksumType::FullObject), three),
            StoredChecksum::Whole
        );
        assert_eq!(
            stored_checksum(Some(&ChecksumType::Composite), single),
            StoredChecksum::Composite { parts: None }
        );
    }
}
