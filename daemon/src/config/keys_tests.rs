use super::*;

/// The keys of the default configuration, read off its pretty `Debug`
/// form (one field a line; a nested struct opens with `name: Type {`).
/// `Config` derives no `Serialize`, and this needs none.
fn keys_of_default() -> Vec<String> {
    let text = format!("{:#?}", Config::default());
    let mut tables: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    for line in text.lines().skip(1) {
        let line = line.trim();
        if line.starts_with('}') {
            tables.pop();
            continue;
        }
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let full = tables
            .iter()
            .map(String::as_str)
            .chain([name])
            .collect::<Vec<_>>()
            .join(".");
        if value.ends_with('{') {
            tables.push(name.to_string());
        } else {
            keys.push(full);
        }
    }
    keys
}

#[test]
fn keys_are_every_field_of_the_config() {
    let found = keys_of_default();
    assert!(found.len() > 10, "{found:?}");
    assert_eq!(
        found, KEYS,
        "config::KEYS differs from the fields of Config"
    );
}

/// Each key is accepted where it is written (a wrong type is an error
/// about its value, not an unknown key).
#[test]
fn each_key_is_known_to_the_parser() {
    for key in KEYS {
        let text = match key.split_once('.') {
            Some((table, leaf)) => format!("[{table}]\n{leaf} = []\n"),
            None => format!("{key} = []\n"),
        };
        let e = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(!e.contains("unknown field"), "{key}: {e}");
    }
}
