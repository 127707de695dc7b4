//! What a test needs from an S3 server, whichever server it is (the in-process s3s-fs of
//! [`super::s3`] or a real Garage from [`super::garage`]): where it listens and how to sign
//! (for the daemon's config and environment), the bucket the inboxes upload to, and a plain
//! SDK client to write objects "as another tool" and to read back what is stored.

use std::collections::HashMap;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

use super::s3::{self, TestS3};
use super::{assert_bytes_eq, sha256_hex};

/// One bucket on one S3 server, with the credentials that may use it.
#[derive(Clone, Debug)]
pub struct Backend {
    /// For messages: "s3s-fs", "garage".
    pub server: &'static str,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The region requests must be signed for (Garage: its `s3_region`).
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

impl From<&TestS3> for Backend {
    fn from(s3: &TestS3) -> Self {
        Self {
            server: "s3s-fs",
            endpoint: s3.endpoint().to_owned(),
            region: s3::REGION.to_owned(),
            access_key: s3::ACCESS_KEY.to_owned(),
            secret_key: s3::SECRET_KEY.to_owned(),
            bucket: s3::BUCKET.to_owned(),
        }
    }
}

impl Backend {
    /// A plain SDK client, as any other tool would use: static credentials, path style.
    /// Checksums only where an operation requires them: the SDK's default (aws-chunked bodies
    /// with a trailing checksum) is rejected by Garage.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "static",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Writes an object the way another tool would: a plain PutObject, no inboxd metadata,
    /// no condition.
    pub async fn put_foreign(&self, key: &str, bytes: &[u8]) {
        self.client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: PutObject {key}: {e:?}", self.server));
    }

    /// The object's bytes, `None` if there is no such key.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let res = self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(out) => {
                let body = out.body.collect().await.expect("read object body");
                Some(body.into_bytes().to_vec())
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(err) => panic!("{}: GetObject {key}: {err:?}", self.server),
        }
    }

    /// Every key in the bucket, sorted.
    pub async fn list(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("{}: ListObjectsV2: {e:?}", self.server));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// The object's user metadata (`x-amz-meta-*` without the prefix) and ETag, `None` if
    /// the key does not exist.
    pub async fn head(&self, key: &str) -> Option<(HashMap<String, String>, String)> {
        let res = self
            .client()
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(out) => Some((
                out.metadata().cloned().unwrap_or_default(),
                out.e_tag().unwrap_or_default().to_owned(),
            )),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => None,
            Err(err) => panic!("{}: HeadObject {key}: {err:?}", self.server),
        }
    }

    /// How many parts the object was uploaded in, read from its ETag: a multipart object's
    /// ETag ends in `-<parts>` (the S3 convention; a single PUT's ETag has no dash).
    pub async fn parts(&self, key: &str) -> Option<u32> {
        let (_, etag) = self.head(key).await.expect("object exists");
        etag.trim_matches('"').rsplit_once('-')?.1.parse().ok()
    }

    /// The object at `key` holds exactly `bytes`, with their SHA-256 as inboxd's metadata.
    pub async fn assert_object(&self, key: &str, bytes: &[u8]) {
        self.assert_bytes(key, bytes).await;
        let (meta, _) = self.head(key).await.expect("object metadata");
        assert_eq!(
            meta.get("sha256").map(String::as_str),
            Some(sha256_hex(bytes).as_str()),
            "{}: x-amz-meta-sha256 of {key}",
            self.server
        );
    }

    /// The object at `key` holds exactly `bytes` (whoever wrote it).
    pub async fn assert_bytes(&self, key: &str, bytes: &[u8]) {
        let Some(object) = self.get(key).await else {
            panic!(
                "{}: object {key} missing; the bucket holds {:?}",
                self.server,
                self.list().await
            );
        };
        assert_bytes_eq(format!("{}: object {key}", self.server), &object, bytes);
    }

    /// The bucket holds exactly these keys.
    pub async fn assert_keys(&self, keys: &[&str]) {
        let mut want: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        want.sort();
        assert_eq!(
            self.list().await,
            want,
            "{}: objects in bucket {}",
            self.server,
            self.bucket
        );
    }
}
