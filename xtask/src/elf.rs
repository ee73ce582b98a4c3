//! Is a binary statically linked? Read from its ELF program headers, not from `ldd`.
//!
//! A binary runs as `/init` in an initramfs that has no dynamic loader and no libc, so it
//! must have no `PT_INTERP` program header and no `DT_NEEDED` entry in its dynamic section.
//! (A static-PIE binary, which Rust's musl target produces, does have a `PT_DYNAMIC` for its
//! own relocations; that is fine as long as it needs no library.) Pure: parses bytes.

use std::fmt;

/// `PT_DYNAMIC`: the dynamic section.
const PT_DYNAMIC: u32 = 2;
/// `PT_INTERP`: the path of the dynamic loader.
const PT_INTERP: u32 = 3;
/// `DT_NULL`: end of the dynamic section.
const DT_NULL: u64 = 0;
/// `DT_NEEDED`: a shared library the binary needs.
const DT_NEEDED: u64 = 1;

/// How a binary is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Linkage {
    /// No loader, no needed libraries.
    Static,
    /// Needs a loader or libraries.
    Dynamic {
        /// The `PT_INTERP` path, if any.
        interpreter: Option<String>,
        /// How many `DT_NEEDED` entries there are.
        needed: usize,
    },
}

/// Why the bytes are not a readable 64-bit little-endian ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ElfError {
    /// No `\x7fELF` magic.
    NotElf,
    /// Not ELFCLASS64 / ELFDATA2LSB (x86_64 is both).
    Unsupported,
    /// A header or table points outside the file.
    Truncated(&'static str),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("elf_not_elf: no ELF magic"),
            Self::Unsupported => f.write_str("elf_unsupported: not a 64-bit little-endian ELF"),
            Self::Truncated(what) => write!(f, "elf_truncated: {what} lies outside the file"),
        }
    }
}

impl std::error::Error for ElfError {}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn range<'a>(b: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::Truncated(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::Truncated(what))?;
    start
        .checked_add(len)
        .and_then(|end| b.get(start..end))
        .ok_or(ElfError::Truncated(what))
}

/// Reads the linkage of a 64-bit little-endian ELF image.
pub(crate) fn linkage(bytes: &[u8]) -> Result<Linkage, ElfError> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS = 2 (64-bit), EI_DATA = 1 (little-endian).
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(ElfError::Unsupported);
    }
    let phoff = u64_at(bytes, 0x20).ok_or(ElfError::Truncated("ELF header"))?;
    let phentsize = u16_at(bytes, 0x36).ok_or(ElfError::Truncated("ELF header"))?;
    let phnum = u16_at(bytes, 0x38).ok_or(ElfError::Truncated("ELF header"))?;
    if phentsize < 56 {
        return Err(ElfError::Truncated("program header entry"));
    }
    let table = range(
        bytes,
        phoff,
        u64::from(phentsize) * u64::from(phnum),
        "program header table",
    )?;
    let mut interpreter = None;
    let mut needed = 0usize;
    for ph in table.chunks_exact(usize::from(phentsize)) {
        let p_type = u32_at(ph, 0).ok_or(ElfError::Truncated("program header"))?;
        let p_offset = u64_at(ph, 8).ok_or(ElfError::Truncated("program header"))?;
        let p_filesz = u64_at(ph, 32).ok_or(ElfError::Truncated("program header"))?;
        match p_type {
            PT_INTERP => {
                let raw = range(bytes, p_offset, p_filesz, "PT_INTERP")?;
                let path = raw.split(|b| *b == 0).next().unwrap_or_default();
                interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
            PT_DYNAMIC => {
                let dynamic = range(bytes, p_offset, p_filesz, "PT_DYNAMIC")?;
                for entry in dynamic.chunks_exact(16) {
                    match u64_at(entry, 0) {
                        Some(DT_NULL) | None => break,
                        Some(DT_NEEDED) => needed += 1,
                        Some(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
    if interpreter.is_none() && needed == 0 {
        Ok(Linkage::Static)
    } else {
        Ok(Linkage::Dynamic {
            interpreter,
            needed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE image with the given program headers `(p_type, payload)`; each
    /// payload is placed after the table and its header points at it.
    fn elf(headers: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let phoff = 64usize;
        let mut out = vec![0u8; phoff + 56 * headers.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        for (i, (p_type, payload)) in headers.iter().enumerate() {
            let at = phoff + 56 * i;
            let data_off = out.len() as u64;
            out[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&data_off.to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    fn dyn_section(tags: &[u64]) -> Vec<u8> {
        let mut v = Vec::new();
        for t in tags {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
        }
        v
    }

    const PT_LOAD: u32 = 1;
    const DT_RELA: u64 = 7;

    #[test]
    fn static_and_static_pie_are_static() {
        assert_eq!(
            linkage(&elf(&[(PT_LOAD, vec![0; 8])])).unwrap(),
            Linkage::Static
        );
        let pie = elf(&[
            (PT_LOAD, vec![0; 8]),
            (PT_DYNAMIC, dyn_section(&[DT_RELA, DT_NULL, DT_NEEDED])),
        ]);
        // DT_NEEDED after DT_NULL does not count.
        assert_eq!(linkage(&pie).unwrap(), Linkage::Static);
    }

    #[test]
    fn interpreter_or_needed_is_dynamic() {
        let with_interp = elf(&[(PT_INTERP, b"/lib64/ld-linux-x86-64.so.2\0".to_vec())]);
        assert_eq!(
            linkage(&with_interp).unwrap(),
            Linkage::Dynamic {
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: 0
            }
        );
        let with_needed = elf(&[(PT_DYNAMIC, dyn_section(&[DT_NEEDED, DT_NEEDED, DT_NULL]))]);
        assert_eq!(
            linkage(&with_needed).unwrap(),
            Linkage::Dynamic {
                interpreter: None,
                needed: 2
            }
        );
    }

    #[test]
    fn hostile_inputs_are_errors() {
        assert_eq!(linkage(b"").unwrap_err(), ElfError::NotElf);
        assert_eq!(linkage(b"#!/bin/sh\n").unwrap_err(), ElfError::NotElf);
        let mut not64 = elf(&[]);
        not64[4] = 1;
        assert_eq!(linkage(&not64).unwrap_err(), ElfError::Unsupported);
        let good = elf(&[(PT_INTERP, b"/x\0".to_vec())]);
        for cut in 4..good.len() {
            assert!(linkage(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut far = good.clone();
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(linkage(&far), Err(ElfError::Truncated(_))));
    }

    #[test]
    fn the_host_shell_is_dynamic() {
        // Debian's /bin/sh (dash) is linked against glibc.
        let bytes = std::fs::read("/bin/sh").unwrap();
        assert!(matches!(linkage(&bytes).unwrap(), Linkage::Dynamic { .. }));
    }
}
