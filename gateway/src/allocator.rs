//! The process's allocator: mimalloc (v2), called the way its own aligned entry points
//! decide internally.
//!
//! glibc's malloc and free were a fifth of the instructions per proxied request
//! (callgrind), and glibc keeps freed per-request memory resident. The `mimalloc` crate's
//! `GlobalAlloc` sends every request through `mi_malloc_aligned`, whose fast path only
//! covers blocks of up to 1 KiB that happen to sit on a free list; every other call
//! (about a dozen per proxied request, whenever a size class's free list is empty) takes
//! the aligned slow path, which checks alignment again before calling the plain one.
//! mimalloc's plain allocation already returns memory aligned to any power of two up to
//! 16 bytes that is no larger than the size (its `mi_malloc_is_naturally_aligned`), which
//! covers nearly every Rust layout, so those go to `mi_malloc` directly.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc's `MI_MAX_ALIGN_SIZE`: the alignment its plain allocation guarantees for
/// blocks at least that large.
const PLAIN_ALIGNMENT: usize = 16;

/// Whether mimalloc's plain allocation of `size` bytes is aligned to `align`.
#[inline(always)]
fn plain_is_aligned(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGNMENT && align <= size
}

pub struct Mimalloc;

/// `plain(size)` when that is aligned enough for `layout`, else `aligned(size, align)`.
/// Inlined, the two are direct calls.
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: the caller passes mimalloc's entry points, which take any size and alignment.
    unsafe {
        if plain_is_aligned(layout.size(), layout.align()) {
            plain(layout.size()) as *mut u8
        } else {
            aligned(layout.size(), layout.align()) as *mut u8
        }
    }
}

// SAFETY: every pointer returned comes from mimalloc, with the layout's alignment (either
// by `plain_is_aligned` or from the aligned entry points), and `mi_free`/`mi_realloc*`
// accept any pointer mimalloc returned, however it was allocated.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls into mimalloc; a null return is passed on as failure.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, so by mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was returned by this allocator; the new block gets the layout's
        // alignment by the same rule as `alloc`.
        unsafe {
            if plain_is_aligned(new_size, layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment and size the rule sends to the plain path comes back aligned, and
    /// survives a grow and a shrink; the rest goes through the aligned path.
    #[test]
    fn allocations_have_their_layouts_alignment() {
        let allocator = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 16, 24, 40, 48, 100, 1000, 1024, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let mut kept = Vec::new();
                for _ in 0..64 {
                    // SAFETY: a non-zero layout; every block is freed below.
                    let p = unsafe { allocator.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    // SAFETY: the block is `size` bytes long.
                    unsafe { p.write_bytes(0xA5, size) };
                    // SAFETY: grown from the layout it was allocated with.
                    let grown = unsafe { allocator.realloc(p, layout, size * 3) };
                    assert_eq!(grown as usize % align, 0, "grown {size}, align {align}");
                    // SAFETY: realloc keeps the first `size` bytes.
                    assert_eq!(unsafe { *grown.add(size - 1) }, 0xA5);
                    kept.push((grown, Layout::from_size_align(size * 3, align).unwrap()));
                }
                for (p, layout) in kept {
                    // SAFETY: allocated above with this layout.
                    unsafe { allocator.dealloc(p, layout) };
                }
                // SAFETY: a non-zero layout; freed right after the check.
                let z = unsafe { allocator.alloc_zeroed(layout) };
                assert_eq!(z as usize % align, 0);
                // SAFETY: the block is `size` bytes long and zeroed.
                assert!(unsafe { std::slice::from_raw_parts(z, size) }
                    .iter()
                    .all(|b| *b == 0));
                // SAFETY: allocated above with this layout.
                unsafe { allocator.dealloc(z, layout) };
            }
        }
    }
}
