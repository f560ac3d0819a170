//! Exports under an S3 prefix, read with the AWS SDK and the standard credential chain.

use super::{Body, ObjectMeta, S3Settings, Source, SourceError, is_export_key};
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::{BehaviorVersion, Region, meta::region::RegionProviderChain};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use chrono::{DateTime, Utc};

/// Cleeng's delivery region, the default when nothing else names one.
const DEFAULT_REGION: &str = "us-west-2";

/// Exports under `s3://bucket/prefix`.
pub struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Source {
    /// Builds the client: region from the settings, else `AWS_REGION` or the profile,
    /// else us-west-2 (not the instance's region from IMDS: the bucket is Cleeng's
    /// delivery bucket, wherever this runs); a custom endpoint (settings, `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`) switches to path-style addressing, as LocalStack needs.
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
            .build();
        S3Source {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
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
                objects.push(ObjectMeta {
                    key: key.to_string(),
                    etag: object.e_tag().unwrap_or_default().to_string(),
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
        // If-Match: if the object was replaced since it was listed, fail rather than
        // apply content that does not belong to the ETag we record.
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object.key);
        if !object.etag.is_empty() {
            request = request.if_match(&object.etag);
        }
        let output = request.send().await.map_err(|e| SourceError::Open {
            location: format!("s3://{}/", self.bucket),
            key: object.key.clone(),
            detail: describe(&e),
        })?;
        Ok(Box::new(output.body.into_async_read()))
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
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
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
