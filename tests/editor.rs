//! The editor support in editors/vscode stays in step with the language: its JSON
//! parses, and its grammar knows every keyword of grammar/cnn.pest and every op of
//! the compiler.

mod common;

use common::root;
use serde_json::Value;

fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

/// Every pattern of the grammar: the scopes it gives and its regular expressions.
fn patterns(value: &Value, found: &mut Vec<(Vec<String>, String)>) {
    match value {
        Value::Object(map) => {
            let regexes: Vec<String> = ["match", "begin", "end"]
                .iter()
                .filter_map(|k| map.get(*k).and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            if !regexes.is_empty() {
                let mut scopes: Vec<String> = map
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .into_iter()
                    .collect();
                if let Some(Value::Object(captures)) = map.get("captures") {
                    scopes.extend(
                        captures
                            .values()
                            .filter_map(|c| c.get("name").and_then(Value::as_str))
                            .map(str::to_string),
                    );
                }
                found.extend(regexes.into_iter().map(|r| (scopes.clone(), r)));
            }
            map.values().for_each(|v| patterns(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| patterns(v, found)),
        _ => {}
    }
}

/// Whether `regex` lists `word` as a whole alternative: `\b(a|word|b)\b`.
fn mentions(regex: &str, word: &str) -> bool {
    regex.match_indices(word).any(|(at, _)| {
        let before = regex[..at].chars().next_back();
        let after = regex[at + word.len()..].chars().next();
        matches!(before, Some('(' | '|' | 'b')) && matches!(after, Some(')' | '|' | '\\'))
    })
}

fn highlighted(grammar: &[(Vec<String>, String)], word: &str, scope_prefixes: &[&str]) -> bool {
    grammar.iter().any(|(scopes, regex)| {
        mentions(regex, word)
            && scopes
                .iter()
                .any(|s| scope_prefixes.iter().any(|p| s.starts_with(p)))
    })
}

/// The words of the `keyword` rule and of every `kw_*` rule in grammar/cnn.pest.
fn grammar_keywords() -> Vec<String> {
    let pest = std::fs::read_to_string(root().join("grammar/cnn.pest")).expect("cnn.pest");
    let start = pest.find("keyword     = @{").expect("the keyword rule");
    let mut words: Vec<String> = pest[start..]
        .lines()
        .filter(|line| line.starts_with("kw_") || !line.contains(" = "))
        .take_while(|line| !line.starts_with("ident"))
        .flat_map(|line| line.split('"').skip(1).step_by(2))
        .map(str::to_string)
        .collect();
    words.sort();
    words.dedup();
    words
}

#[test]
fn the_editor_files_are_valid_json() {
    let package = json("editors/vscode/package.json");
    assert_eq!(
        package["contributes"]["languages"][0]["extensions"][0],
        ".cnn"
    );
    let grammar_path = package["contributes"]["grammars"][0]["path"]
        .as_str()
        .expect("a grammar path");
    let grammar = json(&format!(
        "editors/vscode/{}",
        grammar_path.trim_start_matches("./")
    ));
    assert_eq!(grammar["scopeName"], "source.cnn");
    let configuration = json("editors/vscode/language-configuration.json");
    assert_eq!(configuration["comments"]["lineComment"], "//");
    assert_eq!(configuration["comments"]["blockComment"][0], "/*");
}

#[test]
fn the_grammar_knows_every_keyword_and_op() {
    let mut grammar = Vec::new();
    patterns(
        &json("editors/vscode/syntaxes/cnn.tmLanguage.json"),
        &mut grammar,
    );
    let keywords = grammar_keywords();
    assert!(keywords.len() >= 15, "{keywords:?}");
    for keyword in &keywords {
        assert!(
            highlighted(
                &grammar,
                keyword,
                &["keyword", "storage", "constant.language"]
            ),
            "keyword `{keyword}` of grammar/cnn.pest is missing from cnn.tmLanguage.json"
        );
    }
    for op in cnnc_compiler::ops::OPS {
        assert!(
            highlighted(&grammar, op.name, &["support.function"]),
            "op `{}` is missing from cnn.tmLanguage.json",
            op.name
        );
    }
}

#[test]
fn comments_are_highlighted_as_comments() {
    let mut grammar = Vec::new();
    patterns(
        &json("editors/vscode/syntaxes/cnn.tmLanguage.json"),
        &mut grammar,
    );
    let comment = |regex: &str| {
        grammar
            .iter()
            .any(|(scopes, r)| r == regex && scopes.iter().any(|s| s.starts_with("comment")))
    };
    assert!(comment("//.*$"));
    assert!(comment("/\\*"));
}
