//! A verified download, committed to the store: a local spool renamed into place (one
//! `rename`, atomic), or an S3 upload of the spool, sent in parts as the download arrives
//! and completed only once it was verified (aborted otherwise). Until then nothing of it is
//! visible in the store.

use super::backend::Backend;
use super::fill::Fill;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tower_signed_redirect::BoxError;

/// The parts of an S3 upload (S3 wants 5 MiB at least, but for the last).
const PART: u64 = 8 * 1024 * 1024;

/// Renames a verified local download from the spool into the store, once its bytes are on
/// disk (synced first: a store must never hold a blob that a crash left half-written).
pub(super) async fn rename_into_place(backend: &Backend, fill: &Fill) -> Result<(), BoxError> {
    let file = fill.file.clone();
    tokio::task::spawn_blocking(move || file.sync_data()).await??;
    let name = fill
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("a spool file without a name")?;
    let from = Path::from_iter(["spool", name]);
    let to = backend.object_path(&fill.key, None);
    Ok(backend.objects.rename(&from, &to).await?)
}

/// Uploads a download to S3 as it arrives (parts read from its spool), completed only
/// once the download was verified, aborted otherwise. A blob of one part is sent whole.
pub(super) async fn upload(backend: &Backend, fill: &Fill) -> Result<(), BoxError> {
    let path = backend.object_path(&fill.key, None);
    let mut reader = fill.upload_reader();
    if fill.size <= PART {
        let mut whole = Vec::with_capacity(fill.size as usize);
        while let Some(bytes) = reader.next(PART).await? {
            whole.extend_from_slice(&bytes);
        }
        if !reader.finished().await {
            return Err("the download failed".into());
        }
        backend.objects.put(&path, PutPayload::from(whole)).await?;
        return Ok(());
    }
    let mut upload = backend.objects.put_multipart(&path).await?;
    let mut part = Vec::with_capacity(PART as usize);
    let sent = async {
        while let Some(bytes) = reader.next(PART - part.len() as u64).await? {
            part.extend_from_slice(&bytes);
            if part.len() as u64 >= PART {
                let full = std::mem::replace(&mut part, Vec::with_capacity(PART as usize));
                upload.put_part(PutPayload::from(full)).await?;
            }
        }
        if !reader.finished().await {
            return Err::<(), BoxError>("the download failed".into());
        }
        if !part.is_empty() {
            upload
                .put_part(PutPayload::from(std::mem::take(&mut part)))
                .await?;
        }
        Ok(())
    }
    .await;
    match sent {
        Ok(()) => Ok(upload.complete().await.map(|_| ())?),
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}
