//! A heap buffer whose first byte is aligned to [`DIRECT_ALIGN`](super::DIRECT_ALIGN), as
//! `O_DIRECT` requires. Safe code only: it over-allocates by the alignment and starts at the
//! first aligned address inside the allocation.

/// An aligned, fixed-capacity byte buffer with a variable length.
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl AlignedBuf {
    /// A zeroed buffer that can hold `capacity` bytes, aligned to `align` (a power of two).
    pub(crate) fn zeroed(capacity: usize, align: usize) -> Self {
        let storage = vec![0u8; capacity + align];
        // `align_offset` can return usize::MAX only for alignments it cannot satisfy, which
        // for u8 pointers and power-of-two alignments does not happen; clamp anyway.
        let start = storage.as_ptr().align_offset(align).min(align);
        Self {
            storage,
            start,
            len: capacity,
            capacity,
        }
    }

    /// Maximum length.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length to `len` (at most the capacity) and returns the bytes, contents
    /// unspecified (whatever was there before).
    pub(crate) fn resize(&mut self, len: usize) -> &mut [u8] {
        self.len = len.min(self.capacity);
        self.as_mut_slice()
    }

    /// Sets the buffer to a copy of `data` (truncated to the capacity).
    pub(crate) fn copy_from(&mut self, data: &[u8]) -> &[u8] {
        let dst = self.resize(data.len());
        let n = dst.len();
        dst.copy_from_slice(data.get(..n).unwrap_or_default());
        self.as_slice()
    }

    /// Sets the buffer to `len` zeros.
    pub(crate) fn fill_zero(&mut self, len: usize) -> &[u8] {
        self.resize(len).fill(0);
        self.as_slice()
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.storage
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    /// The bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.storage
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_aligned_and_length_is_exact() {
        for cap in [0usize, 1, 511, 4096, 1 << 20] {
            let mut b = AlignedBuf::zeroed(cap, 4096);
            assert_eq!(b.capacity(), cap);
            assert_eq!(b.as_slice().len(), cap);
            assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0, "cap {cap}");
            assert!(b.as_slice().iter().all(|&x| x == 0));
            assert_eq!(b.as_mut_slice().as_ptr() as usize % 4096, 0);
        }
    }

    #[test]
    fn copy_resize_and_zero() {
        let mut b = AlignedBuf::zeroed(8, 512);
        assert_eq!(b.copy_from(b"abc"), b"abc");
        assert_eq!(b.as_slice().as_ptr() as usize % 512, 0);
        // Longer than the capacity: truncated, never a panic.
        assert_eq!(b.copy_from(b"0123456789"), b"01234567");
        assert_eq!(b.resize(100).len(), 8);
        assert_eq!(b.fill_zero(4), &[0, 0, 0, 0]);
        assert_eq!(b.resize(6), &[0, 0, 0, 0, b'4', b'5']);
    }
}
