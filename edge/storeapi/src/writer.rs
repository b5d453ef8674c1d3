//! `thanos.WriteableStore/RemoteWrite`: the gRPC write path receivers forward to each other on (Thanos
//! Receive's wire format, `pkg/store/storepb/rpc.proto`, v0.25.1: `WriteRequest{timeseries = 1, tenant
//! = 2, replica = 3}`, an empty `WriteResponse`). Served next to the StoreAPI on the same port, as
//! Thanos does.
//!
//! The server side is the [`RemoteWriter`] trait; errors are mapped to gRPC codes once, by
//! `meridian_core::error` (conflict → `AlreadyExists`, unavailable → `Unavailable`, bad request →
//! `InvalidArgument`: the codes a Thanos sender classifies).

use std::sync::Arc;

use meridian_core::error::Result;
use tonic::{Request, Response, Status};

use crate::proto::thanos as pb;

/// What a receiver does with a forwarded write.
#[async_trait::async_trait]
pub trait RemoteWriter: Send + Sync + std::fmt::Debug + 'static {
    /// Stores (or routes) the request: `Ok` when it reached its write quorum.
    async fn remote_write(&self, req: pb::WriteRequest) -> Result<()>;

    /// The largest encoded request accepted (a larger one is refused before it is decoded).
    fn max_message_bytes(&self) -> usize;
}

/// The tonic service for a [`RemoteWriter`].
pub fn service(
    writer: Arc<dyn RemoteWriter>,
) -> pb::writeable_store_server::WriteableStoreServer<Adapter> {
    let max = writer.max_message_bytes();
    pb::writeable_store_server::WriteableStoreServer::new(Adapter(writer))
        .max_decoding_message_size(max)
}

/// Adapts a [`RemoteWriter`] to the generated service trait.
#[derive(Debug, Clone)]
pub struct Adapter(Arc<dyn RemoteWriter>);

#[tonic::async_trait]
impl pb::writeable_store_server::WriteableStore for Adapter {
    async fn remote_write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.0
            .remote_write(request.into_inner())
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::WriteResponse {}))
    }
}
