//! Images passed as file descriptors (D-Bus `h` arguments): what a camera pipeline hands over
//! without copying a frame through the bus. Owns the checks that keep a bad descriptor from
//! hurting the daemon — only regular files and memfds are read (a pipe or socket could block for
//! ever, a directory or device is not an image), the declared size is checked against the
//! model's byte limit before anything is read, and only a memfd sealed against shrinking and
//! writing is mapped without a copy (an unsealed one could be truncated under the mapping and
//! kill the daemon with SIGBUS, or change while it is read); everything else is copied with
//! `pread`. Also the client side: putting bytes into a sealed memfd.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use rustix::fs::{FileType, MemfdFlags, OFlags, SealFlags};

use crate::api::{ApiError, ErrorCode};

/// Which part of the file is the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdRange {
    /// Where the image starts.
    pub offset: u64,
    /// How many bytes (default: to the end of the file).
    pub size: Option<u64>,
}

/// How the bytes were obtained (for logs and the benchmark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdAccess {
    /// A read-only mapping of a sealed memfd: no copy.
    Mapped,
    /// Copied with `pread` (a regular file or an unsealed memfd).
    Copied,
}

/// The seals that make a memfd safe to map: it cannot shrink (no SIGBUS), grow or be written.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::WRITE);

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_input(message)
}

/// An image fd that passed the checks: either already mapped, or a file still to be read.
pub enum FdImage {
    /// A sealed memfd, mapped read-only: the bytes, no copy.
    Mapped(Bytes),
    /// A regular file or an unsealed memfd: `len` bytes at `offset` still to be copied.
    ToCopy {
        /// The file.
        file: File,
        /// Where the image starts.
        offset: u64,
        /// Its length (checked against the limit and the file size).
        len: usize,
    },
}

impl FdImage {
    /// The bytes, reading them if they are not mapped. Blocking for [`FdImage::ToCopy`]: call it
    /// off the async threads.
    pub fn into_bytes(self) -> Result<(Bytes, FdAccess), ApiError> {
        match self {
            FdImage::Mapped(bytes) => Ok((bytes, FdAccess::Mapped)),
            FdImage::ToCopy { file, offset, len } => {
                let mut data = vec![0u8; len];
                file.read_exact_at(&mut data, offset).map_err(|e| bad(format!("cannot read the image fd: {e}")))?;
                Ok((Bytes::from(data), FdAccess::Copied))
            }
        }
    }
}

/// Reads the image bytes behind `fd` (see [`open_image_fd`]). Blocking.
pub fn read_image_fd(fd: OwnedFd, range: FdRange, max_bytes: usize) -> Result<(Bytes, FdAccess), ApiError> {
    open_image_fd(fd, range, max_bytes)?.into_bytes()
}

/// Checks the image behind `fd`, refusing anything but a readable regular file or memfd, and more
/// than `max_bytes`, and maps it when it is a sealed memfd. Only system calls that do not wait on
/// I/O (fstat, fcntl, mmap without pre-faulting): fine on an async thread.
pub fn open_image_fd(fd: OwnedFd, range: FdRange, max_bytes: usize) -> Result<FdImage, ApiError> {
    open_image_fd_racing(fd, range, max_bytes, || {})
}

/// [`open_image_fd`] with `meanwhile` run between the first inspection and the seal check: what
/// a racing client can do there (tests).
fn open_image_fd_racing(
    fd: OwnedFd,
    range: FdRange,
    max_bytes: usize,
    meanwhile: impl FnOnce(),
) -> Result<FdImage, ApiError> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| bad(format!("the image fd cannot be inspected: {e}")))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Fifo => return Err(bad("the image fd is a pipe; pass a memfd or a regular file")),
        FileType::Socket => return Err(bad("the image fd is a socket; pass a memfd or a regular file")),
        FileType::Directory => return Err(bad("the image fd is a directory, not an image")),
        FileType::CharacterDevice | FileType::BlockDevice => {
            return Err(bad("the image fd is a device; pass a memfd or a regular file"));
        }
        other => return Err(bad(format!("the image fd is not a regular file ({other:?})"))),
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| bad(format!("the image fd cannot be inspected: {e}")))?;
    if flags.contains(OFlags::WRONLY) || flags.contains(OFlags::PATH) {
        return Err(bad("the image fd is not open for reading"));
    }
    meanwhile();
    // Seals first, size second: a client may shrink the memfd and then seal it between two
    // calls. The size read after the seals are in place is final; one read before could be
    // larger than the file and map pages past its end (SIGBUS on the first read).
    let sealed = rustix::fs::fcntl_get_seals(&fd).map(|s| s.contains(REQUIRED_SEALS)).unwrap_or(false);
    let stat = if sealed {
        rustix::fs::fstat(&fd).map_err(|e| bad(format!("the image fd cannot be inspected: {e}")))?
    } else {
        stat
    };
    let file_len = u64::try_from(stat.st_size).unwrap_or(0);
    if range.offset > file_len {
        return Err(bad(format!("offset {} is past the end of the file ({file_len} bytes)", range.offset)));
    }
    let len = range.size.unwrap_or(file_len - range.offset);
    let end = range.offset.checked_add(len).ok_or_else(|| bad("offset + size overflows"))?;
    if end > file_len {
        return Err(bad(format!(
            "offset {} + size {len} is past the end of the file ({file_len} bytes)",
            range.offset
        )));
    }
    if len > max_bytes as u64 {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("the image fd holds {len} bytes; this model takes at most {max_bytes} (image_limits.max_bytes)"),
        ));
    }
    if len == 0 {
        return Err(bad("the image fd is empty"));
    }
    let file = File::from(fd);
    if sealed {
        // SAFETY: the memfd is sealed against shrinking, growing and writing (checked above, and
        // seals can never be removed), so the mapped pages stay valid and unchanged for the life
        // of the mapping: no SIGBUS, no data changing under the `&[u8]`. Not pre-faulted: the
        // pages come in (16 at a time, fault-around) as pre-processing reads them on the model's
        // worker, which costs less than MAP_POPULATE here and keeps the D-Bus thread free.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().offset(range.offset).len(len as usize).map(&file) };
        if let Ok(map) = map {
            return Ok(FdImage::Mapped(Bytes::from_owner(map)));
        }
    }
    Ok(FdImage::ToCopy { file, offset: range.offset, len: len as usize })
}

/// Puts `data` into a new memfd and seals it (shrink, grow, write, and further sealing), ready to
/// pass as an image fd that the daemon maps without a copy.
pub fn sealed_memfd(name: &str, data: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let file = File::from(fd);
    file.write_all_at(data, 0)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(fd.as_fd(), REQUIRED_SEALS | SealFlags::SEAL)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfds_are_mapped_and_files_copied() {
        let fd = sealed_memfd("t", b"hello world").unwrap();
        let (b, access) = read_image_fd(fd, FdRange { offset: 6, size: None }, 100).unwrap();
        assert_eq!((&b[..], access), (&b"world"[..], FdAccess::Mapped));

        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"abcdef").unwrap();
        let (b, access) = read_image_fd(f.into(), FdRange { offset: 1, size: Some(3) }, 100).unwrap();
        assert_eq!((&b[..], access), (&b"bcd"[..], FdAccess::Copied));
    }

    /// Regression: the size was taken before the seal check, so a client that shrank and then
    /// sealed its memfd in between got a mapping past the end of the file, and the daemon died
    /// of SIGBUS reading it.
    #[test]
    fn a_memfd_shrunk_and_sealed_during_the_checks_is_mapped_at_its_final_size() {
        let fd = rustix::fs::memfd_create("racy", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 1 << 20).unwrap();
        let client = fd.try_clone().unwrap();
        let image = open_image_fd_racing(fd, FdRange::default(), 2 << 20, move || {
            rustix::fs::ftruncate(&client, 4096).unwrap();
            rustix::fs::fcntl_add_seals(&client, REQUIRED_SEALS).unwrap();
        })
        .unwrap();
        let (bytes, access) = image.into_bytes().unwrap();
        assert_eq!((bytes.len(), access), (4096, FdAccess::Mapped));
        // Every byte is readable (with the stale size this read was past the end: SIGBUS).
        assert_eq!(bytes.iter().map(|&b| u64::from(b)).sum::<u64>(), 0);
    }

    #[test]
    fn bad_descriptors_are_refused_without_reading() {
        let (r, _w) = std::io::pipe().unwrap();
        let e = read_image_fd(r.into(), FdRange::default(), 100).unwrap_err();
        assert!(e.message.contains("pipe"), "{e}");
        let dir = File::open("/").unwrap();
        assert!(read_image_fd(dir.into(), FdRange::default(), 100).unwrap_err().message.contains("directory"));
        // A huge declared size (sparse: nothing allocated) is refused before reading.
        let fd = rustix::fs::memfd_create("huge", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 1 << 40).unwrap();
        let e = read_image_fd(fd, FdRange::default(), 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge, "{e}");
        let fd = sealed_memfd("t", b"abc").unwrap();
        assert!(read_image_fd(fd, FdRange { offset: 2, size: Some(5) }, 100).is_err());
        let empty = rustix::fs::memfd_create("e", MemfdFlags::CLOEXEC).unwrap();
        assert!(read_image_fd(empty, FdRange::default(), 100).unwrap_err().message.contains("empty"));
    }
}
