//! The `trail.v1.Admin` service: operations an operator starts by hand.
//! `Snapshot` asks a log's state driver for a snapshot at its next
//! consistent point and answers once the file is durable.

use tonic::{Request, Response, Status};
use trail_proto::v1::admin_server::Admin;
use trail_proto::v1::{SnapshotRequest, SnapshotResponse};

use super::query::index_status;
use super::LogService;

/// The Admin service, over the same logs as the [`LogService`] it wraps.
#[derive(Clone)]
pub struct AdminService {
    logs: LogService,
}

impl AdminService {
    /// Admin operations on `logs`' logs.
    #[must_use]
    pub fn new(logs: LogService) -> AdminService {
        AdminService { logs }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let SnapshotRequest { log } = request.into_inner();
        let open = self.logs.existing_open_log(&log).await?;
        let derived = open.derived.running()?;
        let answer = derived.snapshot().map_err(|error| index_status(&error))?;
        let info = answer
            .await
            .map_err(|_| Status::unavailable("the state driver stopped before the snapshot"))?
            .map_err(|error| index_status(&error))?;
        Ok(Response::new(SnapshotResponse {
            lsn: info.watermark.lsn,
            hash: info.watermark.hash.to_vec(),
            file: info
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: info.bytes,
        }))
    }
}
