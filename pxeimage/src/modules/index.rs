//! `modules.dep`, `modules.alias` and `modules.softdep` as written by `depmod`, and the load
//! order they imply. **Pure**: the caller reads the files.
//!
//! Formats (one entry per line, `#` comments):
//! - `modules.dep`: `kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko ...`
//!   (paths relative to `/lib/modules/<kver>`; the dependency list is the full closure).
//! - `modules.alias`: `alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_pci`
//! - `modules.softdep`: `softdep crc32c pre: crc32c_intel post: foo`
//!
//! Module names are compared with `-` folded to `_`, as the kernel does.

use std::collections::HashMap;

use super::glob;

/// One line that could not be used, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIssue {
    /// Which file (`modules.dep`, …).
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: String,
    deps: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SoftDep {
    pre: Vec<String>,
    post: Vec<String>,
}

/// The parsed module index.
#[derive(Debug, Clone, Default)]
pub struct ModIndex {
    modules: HashMap<String, Entry>,
    aliases: Vec<(String, String)>,
    softdeps: HashMap<String, SoftDep>,
}

/// Why a module cannot be loaded from this index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not in `modules.dep` (built into the kernel, or not shipped in the initramfs).
    #[error("module {0} is not in modules.dep")]
    NotFound(String),
    /// A dependency is missing from `modules.dep`.
    #[error("module {module} needs {dependency}, which is not in modules.dep")]
    MissingDependency {
        /// The module being planned.
        module: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The dependencies loop.
    #[error("dependency cycle through module {0}")]
    Cycle(String),
}

impl PlanError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::NotFound(_) => "module_not_found",
            PlanError::MissingDependency { .. } => "missing_dependency",
            PlanError::Cycle(_) => "dependency_cycle",
        }
    }
}

/// `drivers/net/virtio_net.ko.zst` → `virtio_net`; `-` becomes `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn lines<'a>(text: &'a str) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

impl ModIndex {
    /// Parses the three files. Unusable lines are skipped and returned as issues.
    pub fn parse(dep: &str, alias: &str, softdep: &str) -> (ModIndex, Vec<LineIssue>) {
        let mut idx = ModIndex::default();
        let mut issues = Vec::new();
        let mut issue = |file, line, reason| issues.push(LineIssue { file, line, reason });

        for (n, l) in lines(dep) {
            let Some((path, deps)) = l.split_once(':') else {
                issue("modules.dep", n, "no ':' after the module path");
                continue;
            };
            let path = path.trim();
            if !path.contains(".ko") || path.starts_with('/') || path.contains("..") {
                issue("modules.dep", n, "not a relative .ko path");
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            idx.modules.insert(
                module_name(path),
                Entry {
                    path: path.to_owned(),
                    deps,
                },
            );
        }

        for (n, l) in lines(alias) {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => {
                    idx.aliases.push((pattern.to_owned(), normalize(module)));
                }
                _ => issue("modules.alias", n, "expected `alias <pattern> <module>`"),
            }
        }

        for (n, l) in lines(softdep) {
            let mut w = l.split_whitespace();
            let (Some("softdep"), Some(module)) = (w.next(), w.next()) else {
                issue(
                    "modules.softdep",
                    n,
                    "expected `softdep <module> pre: … post: …`",
                );
                continue;
            };
            let mut sd = SoftDep::default();
            let mut section: Option<&mut Vec<String>> = None;
            let mut ok = true;
            for word in w {
                match word {
                    "pre:" => section = Some(&mut sd.pre),
                    "post:" => section = Some(&mut sd.post),
                    m => match section.as_deref_mut() {
                        Some(list) => list.push(normalize(m)),
                        None => ok = false,
                    },
                }
            }
            if !ok {
                issue("modules.softdep", n, "module names before `pre:`/`post:`");
                continue;
            }
            idx.softdeps.insert(normalize(module), sd);
        }
        (idx, issues)
    }

    /// Number of modules in `modules.dep`.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// True when `modules.dep` listed nothing.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Modules whose alias patterns match `modalias`, in `modules.alias` order, without
    /// duplicates.
    pub fn resolve(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module) in &self.aliases {
            if !out.contains(&module.as_str()) && glob::matches(pattern, modalias) {
                out.push(module);
            }
        }
        out
    }

    /// The `.ko` paths to load for `module`, dependencies first, each once: soft `pre:`
    /// dependencies, hard dependencies (recursively), the module, then soft `post:`
    /// dependencies. Soft dependencies missing from the index are skipped (they are optional);
    /// a missing hard dependency is an error.
    pub fn load_plan(&self, module: &str) -> Result<Vec<&str>, PlanError> {
        let module = normalize(module);
        if !self.modules.contains_key(&module) {
            return Err(PlanError::NotFound(module));
        }
        let mut plan = Vec::new();
        let mut visiting = Vec::new();
        self.visit(&module, &mut visiting, &mut plan)?;
        Ok(plan)
    }

    fn visit<'a>(
        &'a self,
        module: &str,
        visiting: &mut Vec<String>,
        plan: &mut Vec<&'a str>,
    ) -> Result<(), PlanError> {
        let Some(entry) = self.modules.get(module) else {
            return Err(PlanError::NotFound(module.to_owned()));
        };
        if plan.contains(&entry.path.as_str()) {
            return Ok(());
        }
        if visiting.iter().any(|m| m == module) {
            return Err(PlanError::Cycle(module.to_owned()));
        }
        visiting.push(module.to_owned());
        let soft = self.softdeps.get(module);
        for pre in soft.map(|s| s.pre.as_slice()).unwrap_or_default() {
            // a soft dependency may be absent or may itself loop back; both are tolerated
            if self.modules.contains_key(pre) && !visiting.contains(pre) {
                self.visit(pre, visiting, plan)?;
            }
        }
        for dep in &entry.deps {
            if !self.modules.contains_key(dep) {
                return Err(PlanError::MissingDependency {
                    module: module.to_owned(),
                    dependency: dep.clone(),
                });
            }
            self.visit(dep, visiting, plan)?;
        }
        if !plan.contains(&entry.path.as_str()) {
            plan.push(&entry.path);
        }
        for post in soft.map(|s| s.post.as_slice()).unwrap_or_default() {
            if self.modules.contains_key(post) && !visiting.contains(post) {
                self.visit(post, visiting, plan)?;
            }
        }
        visiting.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/lib/libcrc32c.ko: kernel/crypto/crc32c_generic.ko
kernel/x/loop_a.ko: kernel/x/loop_b.ko
kernel/x/loop_b.ko: kernel/x/loop_a.ko
kernel/x/broken.ko: kernel/x/absent.ko
garbage line
/abs/path.ko:
";

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000001v* virtio-net
alias bad line here too
";

    const SOFTDEP: &str = "\
softdep libcrc32c pre: crc32c-intel crc32c_absent post: crc32c_generic
softdep nope crc32c
";

    fn index() -> (ModIndex, Vec<LineIssue>) {
        ModIndex::parse(DEP, ALIAS, SOFTDEP)
    }

    #[test]
    fn parses_and_reports_bad_lines() {
        let (idx, issues) = index();
        assert_eq!(idx.len(), 12);
        let where_: Vec<(&str, usize)> = issues.iter().map(|i| (i.file, i.line)).collect();
        assert_eq!(
            where_,
            vec![
                ("modules.dep", 13),
                ("modules.dep", 14),
                ("modules.alias", 5),
                ("modules.softdep", 2)
            ]
        );
    }

    #[test]
    fn names_fold_dashes_and_extensions() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko"),
            "crc32c_intel"
        );
        assert_eq!(module_name("a/virtio_net.ko.xz"), "virtio_net");
        assert_eq!(module_name("b.ko.zst"), "b");
    }

    #[test]
    fn resolves_aliases_without_duplicates() {
        let (idx, _) = index();
        assert_eq!(
            idx.resolve("pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"),
            vec!["virtio_pci"]
        );
        assert_eq!(idx.resolve("virtio:d00000001v00001AF4"), vec!["virtio_net"]);
        assert!(
            idx.resolve("pci:v00008086d00001234sv0sd0bc0sc0i0")
                .is_empty()
        );
    }

    #[test]
    fn plans_dependencies_first_and_once() {
        let (idx, _) = index();
        assert_eq!(
            idx.load_plan("virtio_net").unwrap(),
            vec![
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
            ]
        );
        assert_eq!(
            idx.load_plan("virtio-pci").unwrap(),
            vec![
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
            ]
        );
    }

    #[test]
    fn softdeps_wrap_the_module() {
        let (idx, _) = index();
        assert_eq!(
            idx.load_plan("libcrc32c").unwrap(),
            vec![
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/lib/libcrc32c.ko",
            ]
        );
    }

    #[test]
    fn plan_errors_have_codes() {
        let (idx, _) = index();
        let e = idx.load_plan("nothere").unwrap_err();
        assert_eq!(e.code(), "module_not_found");
        let e = idx.load_plan("broken").unwrap_err();
        assert_eq!(e.code(), "missing_dependency");
        let e = idx.load_plan("loop_a").unwrap_err();
        assert_eq!(e, PlanError::Cycle("loop_a".into()));
    }
}
