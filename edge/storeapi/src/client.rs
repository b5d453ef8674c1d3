//! A StoreAPI client over a [`GrpcChannel`] (plaintext or mTLS). It implements [`Store`], so the gateway
//! treats a remote store exactly like a local one; `SeriesBatch` frames are flattened.

use futures::StreamExt;
use meridian_pki::channel::GrpcChannel;

use super::{MAX_MESSAGE_SIZE, MetadataStream, SeriesFrame, SeriesStream, Store};
use crate::proto::thanos as pb;
use crate::proto::thanos::info as infopb;
use meridian_core::error::{Error, ErrorKind, Result};

/// A client for one StoreAPI endpoint.
#[derive(Clone, Debug)]
pub struct StoreClient {
    channel: GrpcChannel,
    address: String,
}

impl StoreClient {
    /// Wraps an established channel; `address` names the endpoint in errors and warnings.
    pub fn new(channel: GrpcChannel, address: impl Into<String>) -> StoreClient {
        StoreClient {
            channel,
            address: address.into(),
        }
    }

    /// Connects over plaintext HTTP/2 to `host:port`.
    pub async fn connect_plaintext(address: &str) -> Result<StoreClient> {
        let channel = GrpcChannel::plaintext_lazy(address, None).map_err(Error::bad_data)?;
        channel.connect().await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("connecting to {address}: {}", e.message()),
            )
        })?;
        Ok(StoreClient::new(channel, address))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn channel(&self) -> &GrpcChannel {
        &self.channel
    }

    /// The raw generated `thanos.Store` client, with Meridian's message size limits.
    pub fn store_client(&self) -> pb::store_client::StoreClient<GrpcChannel> {
        pb::store_client::StoreClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    pub fn info_client(&self) -> infopb::info_client::InfoClient<GrpcChannel> {
        infopb::info_client::InfoClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    pub fn metadata_client(&self) -> pb::metadata_client::MetadataClient<GrpcChannel> {
        pb::metadata_client::MetadataClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The status as an error of its kind. Which store failed is the caller's to say (the fan-out names
    /// it in its warnings, the probe in its message): the message is the store's own.
    fn err(&self, s: tonic::Status) -> Error {
        Error::from(s)
    }
}

#[async_trait::async_trait]
impl Store for StoreClient {
    async fn info(&self) -> Result<infopb::InfoResponse> {
        self.info_client()
            .info(infopb::InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(s))
    }

    async fn series(&self, req: pb::SeriesRequest) -> Result<SeriesStream> {
        use pb::series_response::Result as R;
        let stream = self
            .store_client()
            .series(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let frames = stream.flat_map(move |r| {
            let out: Vec<Result<SeriesFrame>> = match r {
                Err(s) => vec![Err(Error::from(s))],
                Ok(pb::SeriesResponse { result: None })
                | Ok(pb::SeriesResponse {
                    result: Some(R::Hints(_)),
                }) => vec![],
                Ok(pb::SeriesResponse {
                    result: Some(R::Series(s)),
                }) => vec![Ok(SeriesFrame::Series(s))],
                Ok(pb::SeriesResponse {
                    result: Some(R::Warning(w)),
                }) => vec![Ok(SeriesFrame::Warning(w))],
                Ok(pb::SeriesResponse {
                    result: Some(R::Batch(b)),
                }) => b
                    .series
                    .into_iter()
                    .map(|s| Ok(SeriesFrame::Series(s)))
                    .collect(),
            };
            futures::stream::iter(out)
        });
        Ok(Box::pin(frames))
    }

    async fn label_names(&self, req: pb::LabelNamesRequest) -> Result<pb::LabelNamesResponse> {
        self.store_client()
            .label_names(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(s))
    }

    async fn label_values(&self, req: pb::LabelValuesRequest) -> Result<pb::LabelValuesResponse> {
        self.store_client()
            .label_values(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(s))
    }

    async fn metric_metadata(&self, req: pb::MetricMetadataRequest) -> Result<MetadataStream> {
        let stream = self
            .metadata_client()
            .metric_metadata(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(Box::pin(stream.map(move |r| r.map_err(Error::from))))
    }
}
