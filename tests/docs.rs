//! The documentation against the code: the keys and defaults of `config/ddbcache.toml` against
//! `config::Config`; the environment variables in `config/ddbcache.toml`, the README and `deploy/`
//! against `config::ENV_OVERRIDES`; the README's metrics table, the Grafana
//! dashboard's queries and the ServiceMonitor against `metrics::Metrics`. What operators read
//! must name what the program reads and exports; these tests fail when the two drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ddbcache::config::{Config, CONFIG_ENV, ENV_OVERRIDES};
use ddbcache::metrics::Metrics;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The cells of the Markdown table rows whose first cell starts with `` `prefix ``.
fn table_rows(markdown: &str, prefix: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter(|l| l.starts_with(&format!("| `{prefix}")))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The first `code span` of a Markdown cell.
fn code(cell: &str) -> &str {
    cell.split('`').nth(1).unwrap_or("")
}

fn overrides() -> Vec<(String, String)> {
    ENV_OVERRIDES
        .iter()
        .map(|(var, key)| (var.to_string(), key.to_string()))
        .collect()
}

#[test]
fn shipped_config_lists_every_environment_variable() {
    let listed: Vec<(String, String)> = read("config/ddbcache.toml")
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix('#')?.split_whitespace();
            let var = words.next().filter(|w| w.starts_with("DDBCACHE_"))?;
            Some((var.to_string(), words.next()?.to_string()))
        })
        .collect();
    assert_eq!(listed, overrides());
}

/// The dotted keys of a TOML table's leaves.
fn dotted_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        match value {
            toml::Value::Table(t) => dotted_keys(t, &format!("{key}."), out),
            _ => {
                out.insert(key);
            }
        }
    }
}

#[test]
fn shipped_config_sets_every_key_with_a_default_to_it_in_its_current_spelling() {
    // The file is where operators read what each key does: it sets each key that has a default
    // (the others are comments), under the name the code reads first, and to that default.
    let text = read("config/ddbcache.toml");
    let (mut shipped, mut defaults) = (BTreeSet::new(), BTreeSet::new());
    dotted_keys(&toml::from_str(&text).unwrap(), "", &mut shipped);
    let default = Config::default();
    dotted_keys(&toml::Table::try_from(&default).unwrap(), "", &mut defaults);
    assert_eq!(shipped, defaults, "config/ddbcache.toml");
    let read = Config::from_toml(&text).unwrap();
    assert_eq!(read.to_toml(), default.to_toml(), "config/ddbcache.toml");
}

#[test]
fn readme_configuration_table_matches_the_overrides_and_defaults() {
    let rows = table_rows(&read("README.md"), "DDBCACHE_");
    let listed: Vec<(String, String)> = rows
        .iter()
        .map(|r| (code(&r[0]).to_string(), code(&r[1]).to_string()))
        .collect();
    assert_eq!(listed, overrides());
    // A default written as code is the one the program has.
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for row in &rows {
        let (key, default) = (code(&row[1]), &row[2]);
        if !default.starts_with('`') {
            continue;
        }
        let mut value = &toml::Value::Table(defaults.clone());
        for part in key.split('.') {
            value = &value[part];
        }
        let actual = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(code(default), actual, "README default of {key}");
    }
}

#[test]
fn deployment_files_name_only_variables_ddbcache_reads() {
    let known: BTreeSet<&str> = ENV_OVERRIDES
        .iter()
        .map(|(var, _)| *var)
        .chain([CONFIG_ENV])
        .collect();
    let mut files = vec![root().join("README.md"), root().join("deploy/Dockerfile")];
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "toml" | "md" | "json")
            ) {
                files.push(path);
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("DDBCACHE_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `DDBCACHE_*` in prose names the family, not a variable.
            if name != "DDBCACHE_" {
                assert!(
                    known.contains(name.as_str()),
                    "{}: {name} is not a variable ddbcache reads",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn readme_metrics_table_matches_the_exported_families() {
    let rows = table_rows(&read("README.md"), "ddbcache_");
    let documented: BTreeMap<String, (String, Vec<String>)> = rows
        .iter()
        .map(|r| {
            // Labels are the code spans of the third cell that are not label values in
            // parentheses: `kind` (`connect`, `timeout`) names one label, `kind`.
            let labels = r[2]
                .split('(')
                .next()
                .unwrap_or("")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            (code(&r[0]).to_string(), (r[1].clone(), labels))
        })
        .collect();
    let exported: BTreeMap<String, (String, Vec<String>)> = Metrics::new()
        .families()
        .into_iter()
        .map(|f| (f.name, (f.kind.to_string(), f.labels)))
        .collect();
    assert_eq!(documented, exported);
}

/// Every `ddbcache_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("ddbcache_")
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn dashboards() -> Vec<PathBuf> {
    std::fs::read_dir(root().join("deploy/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

#[test]
fn grafana_queries_name_exported_metrics() {
    let families: BTreeMap<String, &'static str> = Metrics::new()
        .families()
        .into_iter()
        .map(|f| (f.name, f.kind))
        .collect();
    let mut checked = 0;
    for path in dashboards() {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        assert!(!exprs.is_empty(), "{}: no queries", path.display());
        for expr in exprs {
            for name in metric_names(&expr) {
                let known = families.get(&name).copied().or_else(|| {
                    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                        let base = name.strip_suffix(suffix)?;
                        families.get(base).filter(|k| **k == "histogram").copied()
                    })
                });
                assert!(
                    known.is_some(),
                    "{}: {name} is not an exported metric (in {expr})",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

/// Every `expr` of a panel target and every query variable's query, anywhere in the dashboard.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn service_monitor_scrapes_the_admin_port_metrics_path() {
    let dir = "deploy/kubernetes/prometheus-operator";
    let monitor = read(&format!("{dir}/servicemonitor.yaml"));
    let paths: Vec<&str> = monitor
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path:"))
        .map(str::trim)
        .collect();
    assert_eq!(paths, ["/metrics"], "{dir}/servicemonitor.yaml");
    let config = Config::from_file(&root().join("deploy/kubernetes/base/ddbcache.toml")).unwrap();
    let service = read(&format!("{dir}/service.yaml"));
    let ports: Vec<u16> = service
        .lines()
        .filter_map(|l| l.trim().strip_prefix("targetPort:"))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(
        ports,
        [config.listen.admin_addr.port()],
        "{dir}/service.yaml"
    );
}

/// Every Rust source file of the workspace's server and protocol crates, as text.
fn sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["src", "protocol/src", "benches/load/src", "tests"] {
        walk(&root().join(dir), &mut out);
    }
    out
}

/// Whether a file of that name is in the source tree (a codemap names files by their folder).
fn file_named(name: &str) -> bool {
    fn walk(dir: &Path, name: &str) -> bool {
        std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
            let path = entry.path();
            path.file_name().is_some_and(|n| n == name) || (path.is_dir() && walk(&path, name))
        })
    }
    ["src", "protocol/src", "benches/load/src"]
        .iter()
        .any(|dir| walk(&root().join(dir), name))
}

/// Whether some source defines `name`: a type, trait or variant when it is CamelCase; a
/// function, module, constant, static, field or crate alias otherwise. A CamelCase name the
/// sources only quote is one of DynamoDB's own (`ConsumedCapacity`).
fn defined(sources: &[String], name: &str) -> bool {
    let camel = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().any(|c| c.is_ascii_lowercase());
    let kinds: &[&str] = if camel {
        &["struct", "enum", "trait", "type"]
    } else {
        &["fn", "mod", "const", "static"]
    };
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sources.iter().any(|text| {
        text.lines().any(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
            let line = line.strip_prefix("pub(super) ").unwrap_or(line);
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let line = line.strip_prefix("async ").unwrap_or(line);
            let declares = kinds.iter().any(|kind| {
                line.strip_prefix(kind)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|rest| rest.strip_prefix(name))
                    .is_some_and(|rest| !rest.starts_with(is_word))
            });
            // An enum variant: a line that is the variant's name, then its fields or a comma.
            let variant = camel
                && line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([',', ' ', '(', '{']));
            let field = !camel && line.strip_prefix(name).is_some_and(|r| r.starts_with(": "));
            let alias = line.contains(&format!(" as {name};"));
            let quoted = camel && line.contains(&format!("\"{name}\""));
            declares || variant || field || alias || quoted
        })
    })
}

#[test]
fn architecture_names_only_files_types_functions_and_keys_that_exist() {
    // ARCHITECTURE.md is the codemap a new contributor reads first: a name it gives that the
    // code no longer has sends them looking for nothing.
    let text = read("ARCHITECTURE.md");
    let sources = sources();
    let mut keys = BTreeSet::new();
    dotted_keys(
        &toml::Table::try_from(Config::default()).unwrap(),
        "",
        &mut keys,
    );
    // Keys without a default are documented commented out in the shipped config
    // (`# redis_url = ...` under `[fleet]`).
    let mut optional = BTreeSet::new();
    let mut section = String::new();
    for line in read("config/ddbcache.toml").lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((name, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                optional.insert(format!("{section}.{name}"));
            }
        }
    }
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in text.split('`').skip(1).step_by(2) {
        let span = span.trim_end_matches("()");
        let path_like = span.ends_with(".rs") || (span.ends_with('/') && !span.contains(' '));
        if path_like {
            checked += 1;
            let exists = root().join(span).exists() || (!span.contains('/') && file_named(span));
            if !exists {
                missing.push(format!("file {span}"));
            }
        } else if span.split("::").all(is_ident) {
            // A type, a function, `Type::method`, `module::item`: each part must be defined
            // (a lower-case word alone may be an English word or a field; only paths and
            // CamelCase names are checked).
            let parts: Vec<&str> = span.split("::").collect();
            let camel = |p: &str| {
                p.starts_with(|c: char| c.is_ascii_uppercase())
                    && p.chars().any(|c| c.is_ascii_lowercase())
            };
            if parts.len() == 1 && !camel(parts[0]) {
                continue;
            }
            checked += 1;
            // The crates themselves.
            for part in parts.into_iter().filter(|p| *p != "ddbcache") {
                if !defined(&sources, part) {
                    missing.push(format!("{part} (in `{span}`)"));
                }
            }
        } else if span.contains('.')
            && !span.contains(' ')
            && span.split('.').all(is_ident)
            && span.starts_with(|c: char| c.is_ascii_lowercase())
        {
            // A config key (`server.max_body_bytes`) or a section.
            checked += 1;
            let known = keys.contains(span)
                || keys.iter().any(|k| k.starts_with(&format!("{span}.")))
                || optional.contains(span)
                || span == "upstream.timeout_ms";
            if !known {
                missing.push(format!("config key {span}"));
            }
        }
    }
    assert!(checked > 100, "only {checked} names were checked");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what the code does not have: {missing:#?}"
    );
}
