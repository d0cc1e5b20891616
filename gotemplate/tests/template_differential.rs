//! konnector's template engine against Go's own `text/template` (tests/go/render, built here with the machine's
//! Go, which must be at least Go 1.26: CAREN and CAAPH are built with Go 1.25+), over a corpus that uses every
//! template feature a values template can reach plus CAREN's shipped template and konnector's built-in one, each
//! with varied inputs, and over thousands of generated templates and token strings. A pair matches when both render
//! the same bytes or both fail (error texts may differ).
//!
//! The data is CAREN's template variables with CAREN's Go types, as the reference program declares them (its
//! `values` struct); konnector's executor builds the same struct from its own types (`values.rs`), and
//! konnector-tests' `caaph_rendering.rs` checks that conversion against this program too.
//!
//! Where the engine still differs from Go, the difference is listed in `KNOWN_GAPS` and asserted: the test fails if
//! a listed gap closes (update the list and the README) or if any unlisted case differs.

use std::collections::BTreeSet;

use konnector_gotemplate::{Value, render};
use serde_json::{Value as Json, json};

#[path = "support/go_reference.rs"]
mod go_reference;

use go_reference::{build_go_renderer, go_render};

/// CAREN's shipped values template, byte for byte (kept with konnector's other CAREN fixtures).
const CAREN_TEMPLATE: &str = include_str!("../../tests/go/testdata/caren-values-template.yaml");

/// konnector's built-in values template (the chart's default values-template ConfigMap).
const BUILTIN_VALUES_TEMPLATE: &str =
    include_str!("../../deploy/chart/konnector/files/konnector-agent-values-template.yaml");

/// Cases where konnector and Go disagree today, by corpus name, with the reason. Each is asserted to still
/// differ, and only as a refusal on konnector's side, never as different bytes.
const KNOWN_GAPS: &[(&str, &str)] = &[
    (
        "slice-utf8",
        "slicing a string inside a UTF-8 character: Go writes invalid UTF-8, konnector refuses the template",
    ),
    (
        "printf-sharp-v",
        "printf's %#v (Go syntax) is not implemented: konnector refuses the template",
    ),
    (
        "printf-q-unassigned",
        "%q of a code point Rust's standard library cannot classify (U+0378 is unassigned): Go escapes it, konnector refuses",
    ),
    (
        "range-huge",
        "more than a million range iterations in one rendering: Go runs them, konnector refuses the template",
    ),
];

/// The template corpus: (name, template). Each feature of Go's text/template that a values template can reach
/// with CAREN's variables.
fn corpus() -> Vec<(&'static str, String)> {
    let mut c: Vec<(&'static str, String)> = vec![
        ("caren", CAREN_TEMPLATE.to_owned()),
        ("builtin", BUILTIN_VALUES_TEMPLATE.to_owned()),
        ("text", "plain text\nwith lines\n".into()),
        ("fields", "{{ .AgentName }}/{{ .PrismCentralHost }}:{{ .PrismCentralPort }} {{ .PrismCentralInsecure }} {{ .EnableKubeconfigUpload }}".into()),
        ("trim", "a  \n  {{- .ClusterName -}}  \n  b {{- \" c \" }} {{ \"d\" -}} e".into()),
        ("comment", "a{{/* a comment */}}b{{- /* trimmed */ -}} c".into()),
        ("if-else", "{{ if .CategoryMappings }}cats{{ else if .PrismCentralAdditionalTrustBundle }}bundle{{ else }}none{{ end }}".into()),
        ("with", "{{ with .ControlPlaneEndpoint }}ep={{ . }} root={{ $.AgentName }}{{ else }}no endpoint{{ end }}".into()),
        ("with-var", "{{ with $e := .ControlPlaneEndpoint }}{{ $e }}{{ end }}".into()),
        ("variables", "{{ $n := .ClusterName }}{{ $p := .PrismCentralPort }}{{ $n }}-{{ $p }}-{{ $.AgentName }}".into()),
        ("define-template", "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" .ClusterName }}{{ template \"T\" .PrismCentralPort }}".into()),
        ("block", "{{ block \"B\" . }}{{ .AgentName }}{{ end }}!".into()),
        ("and-or-not", "{{ and .EnableKubeconfigUpload .ControlPlaneEndpoint }}|{{ or .CategoryMappings \"none\" }}|{{ not .PrismCentralInsecure }}|{{ and \"\" 1 }}|{{ or 0 \"\" }}".into()),
        ("compare-strings", "{{ eq .ClusterName \"my-cluster\" }} {{ ne .AgentName \"x\" }} {{ lt .ClusterName \"m\" }} {{ ge .ClusterName \"a\" }} {{ eq .ClusterName \"a\" \"my-cluster\" }}".into()),
        ("compare-numbers", "{{ eq .PrismCentralPort 9440 }} {{ gt .PrismCentralPort 1000 }} {{ le .PrismCentralPort 9440 }} {{ lt 1 2 }} {{ eq 1 1 }}".into()),
        ("compare-bools", "{{ eq .PrismCentralInsecure true }} {{ ne .EnableKubeconfigUpload false }}".into()),
        ("len", "{{ len .ClusterName }} {{ len .CategoryMappings }} {{ le (len .ClusterName) 40 }}".into()),
        ("slice", "{{ slice .ClusterName 0 2 }}|{{ slice .ClusterName 1 }}|{{ slice .AgentName }}".into()),
        ("slice-out-of-range", "{{ slice .ClusterName 0 99 }}".into()),
        ("print", "{{ print .ClusterName 1 2 \"x\" true }}|{{ print 1 2 }}|{{ println \"a\" 3 }}".into()),
        ("printf", "{{ printf \"%s:%d %v %t %q\" .PrismCentralHost .PrismCentralPort .ClusterName .PrismCentralInsecure .AgentName }}".into()),
        ("printf-widths", "{{ printf \"[%6d][%-6d][%06d][%x][%X][%o]\" .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort }}".into()),
        ("printf-strings", "{{ printf \"[%10s][%-10s][%.3s][%x]\" .AgentName .AgentName .AgentName \"hi\" }}".into()),
        ("pipeline", "{{ .ClusterName | printf \"%q\" }} {{ .ClusterName | len | printf \"%03d\" }} {{ \"a\" | printf \"%s-%s\" \"b\" }}".into()),
        ("parens", "{{ (printf \"%s\" .AgentName) }} {{ printf \"%d\" (len .AgentName) }}".into()),
        ("constants", "{{ 42 }} {{ -7 }} {{ 0x1F }} {{ true }} {{ \"s\" }} {{ `raw\\n` }} {{ 'a' }}".into()),
        ("escape-delims", "{{ \"{{\" }} not a template".into()),
        ("html-js-urlquery", "{{ html \"<a href='x'>&\\\"\" }}|{{ js \"it's <b>=&\\\\\" }}|{{ urlquery \"a b&c=d/é\" }}|{{ html .ClusterName }}".into()),
        ("joinQuoted-unused", "{{ if false }}{{ joinQuoted .Nothing }}{{ end }}ok".into()),
        ("joinQuoted-nil", "[{{ joinQuoted nil }}]".into()),
        ("joinQuoted-string", "{{ joinQuoted .ClusterName }}".into()),
        ("index-struct", "{{ index . \"ClusterName\" }}".into()),
        ("missing-field", "{{ .NonExistentField }}".into()),
        ("field-of-string", "{{ .ClusterName.Foo }}".into()),
        ("undefined-function", "{{ nosuchfunc }}".into()),
        ("parse-error", "{{ if }}".into()),
        ("unclosed", "{{ if .ClusterName }}x".into()),
        ("call-non-function", "{{ call .ClusterName }}".into()),
        ("quoted-yaml", "k8sClusterName: {{ .ClusterName | printf \"%q\" }}\ncategoryMappings: {{ printf \"%q\" .CategoryMappings }}".into()),
        ("break", "{{ if false }}{{ range .Nothing }}{{ break }}{{ end }}{{ end }}ok".into()),
        ("continue", "{{ if false }}{{ range .Nothing }}{{ continue }}{{ end }}{{ end }}ok".into()),
        ("reassign", "{{ $x := .AgentName }}{{ if .EnableKubeconfigUpload }}{{ $x = .ClusterName }}{{ end }}{{ $x }}".into()),
        // Edges of printing, numbers, strings and scoping.
        ("print-struct", "{{ . }}".into()),
        ("template-no-dot", "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" }}".into()),
        ("template-missing", "{{ template \"nope\" }}".into()),
        ("define-twice", "{{ define \"T\" }}a{{ end }}{{ define \"T\" }}b{{ end }}".into()),
        ("define-empty-keeps", "{{ define \"T\" }}a{{ end }}{{ define \"T\" }} {{ end }}{{ template \"T\" }}".into()),
        ("define-nested", "{{ if true }}{{ define \"T\" }}a{{ end }}{{ end }}".into()),
        ("printf-flags", "{{ printf \"%+d|% d|%#x|%#o|%08.3f|%-8.2f|%5.1f|%e|%E|%.2s|%5t|%c|%U|%T|%T|%T\" .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort 3.14159 -2.5 2.25 1234.5678 0.000123 .ClusterName .PrismCentralInsecure 'x' 'é' .PrismCentralPort .ClusterName 1.5 }}".into()),
        ("printf-bad", "{{ printf \"%d|%s|%t|%x\" .ClusterName .PrismCentralPort .ClusterName .PrismCentralInsecure }}".into()),
        ("printf-missing-extra", "{{ printf \"%s %s\" .AgentName }}|{{ printf \"%s\" .AgentName .ClusterName 3 }}|{{ printf \"100%%\" }}|{{ printf \"%\" }}".into()),
        ("printf-nil", "{{ printf \"%v|%d\" nil nil }}|{{ print nil 1 }}".into()),
        ("numbers", "{{ 1_000 }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1.0 }} {{ 1e21 }} {{ 1e-5 }} {{ 123456789.0 }} {{ 0.5 }} {{ +3 }} {{ 1e6 }} {{ 100000.0 }}".into()),
        ("bad-number", "{{ 1x }}".into()),
        ("string-escapes", "{{ \"\\x41\\u00e9\\101\\t|\" }}{{ 'x' }}{{ '\\n' }}{{ '\\'' }}".into()),
        ("bad-escape", "{{ \"\\'\" }}".into()),
        ("comment-trim", "a {{- /* c */}} b {{/* c */ -}} c".into()),
        ("comment-spaced", "{{ /* c */ }}".into()),
        ("else-if-with", "{{ with .CategoryMappings }}c{{ else if .ControlPlaneEndpoint }}e{{ else }}n{{ end }}".into()),
        ("range-nil", "{{ range $i, $e := nil }}x{{ else }}empty{{ end }}".into()),
        ("range-string", "{{ range .ClusterName }}x{{ end }}".into()),
        ("scoping", "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}{{ with $y := .AgentName }}{{ $y }}{{ end }}".into()),
        ("scope-leak", "{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}".into()),
        ("root-in-template", "{{ define \"T\" }}{{ $.ClusterName }}{{ end }}{{ template \"T\" . }}".into()),
        ("pipe-into-and-or", "{{ .ClusterName | and true }}|{{ \"\" | or .CategoryMappings }}|{{ 0 | not }}".into()),
        ("compare-errors", "{{ eq 1 1.0 }}".into()),
        ("compare-bool-order", "{{ lt true false }}".into()),
        ("compare-mixed-sign", "{{ ne .PrismCentralPort -1 }} {{ gt .PrismCentralPort -1 }} {{ eq -1 .PrismCentralPort }}".into()),
        ("index-string", "{{ index \"abc\" 1 }} {{ index .ClusterName 0 }} {{ index .ClusterName }}".into()),
        ("index-out-of-range", "{{ index .ClusterName 99 }}".into()),
        ("len-bytes", "{{ len \"é\" }} {{ len .CategoryMappings }}".into()),
        ("slice-utf8", "{{ slice \"héllo\" 1 2 }}".into()),
        ("slice-3", "{{ slice .ClusterName 0 1 2 }}".into()),
        ("empty-print", "[{{ print }}][{{ println }}]".into()),
        ("no-value", "{{ with $x := .ClusterName }}{{ end }}{{ template \"T\" }}{{ define \"T\" }}{{ . }}{{ end }}".into()),
        ("field-on-var", "{{ $v := . }}{{ $v.ClusterName }} {{ (print .AgentName) }}".into()),
        ("field-on-paren", "{{ (.).ClusterName }}".into()),
        ("literal-field", "{{ \"a\".Foo }}".into()),
        ("nil-in-dead-branch", "{{ if false }}{{ nil }}{{ end }}ok".into()),
        ("nil-command", "{{ nil }}".into()),
        ("empty-action", "{{ }}".into()),
        ("unclosed-action", "{{ .ClusterName ".into()),
        ("newline-in-action", "{{ printf \"%s\"\n .ClusterName }}".into()),
        ("unicode-text", "héllo ✓ {{ .ClusterName }} ✓".into()),
        // Go 1.22-1.26: {{else with}}, range over integers, break/continue, assignment.
        ("else-with", "{{ with .CategoryMappings }}c={{ . }}{{ else with .ControlPlaneEndpoint }}e={{ . }}{{ else }}none{{ end }}".into()),
        ("else-with-chain", "{{ with .PrismCentralAdditionalTrustBundle }}b{{ else with .CategoryMappings }}c{{ else with $x := .AgentName }}{{ $x }}{{ end }}".into()),
        ("else-with-var", "{{ with $a := .CategoryMappings }}{{ $a }}{{ else with $b := .AgentName }}{{ $b }}/{{ $a }}{{ end }}".into()),
        ("else-with-in-if", "{{ if .AgentName }}a{{ else with .ClusterName }}b{{ end }}".into()),
        ("else-if-in-range", "{{ range 0 }}{{ else if true }}x{{ end }}".into()),
        ("else-with-in-range", "{{ range 0 }}{{ else with 1 }}x{{ end }}".into()),
        ("range-int", "{{ range 3 }}[{{ . }}]{{ end }}|{{ range $i := 4 }}{{ $i }}{{ end }}|{{ range 0 }}x{{ else }}none{{ end }}|{{ range -2 }}x{{ else }}neg{{ end }}".into()),
        ("range-port", "{{ range $p := .PrismCentralPort }}{{ if lt $p 3 }}{{ $p }},{{ else }}{{ break }}{{ end }}{{ end }}|{{ range .PrismCentralPort }}{{ printf \"%T\" . }}{{ break }}{{ end }}".into()),
        ("range-len", "{{ range len .ClusterName }}{{ . }}{{ end }}|{{ range $i := len .CategoryMappings }}{{ $i }}{{ else }}no categories{{ end }}".into()),
        ("range-int-two-vars", "{{ range $i, $e := 3 }}{{ $i }}{{ end }}".into()),
        ("range-int-two-vars-zero", "{{ range $i, $e := 0 }}x{{ else }}e{{ end }}".into()),
        ("range-else-sees-var", "{{ range $x := 0 }}x{{ else }}[{{ $x }}]{{ end }}{{ range $y := -3 }}{{ else }}[{{ $y }}]{{ end }}".into()),
        ("range-assign", "{{ $x := \"s\" }}{{ range $x = 3 }}{{ end }}{{ $x }}|{{ $y := 9 }}{{ range $y = 0 }}{{ end }}{{ $y }}".into()),
        ("range-comma-then-command", "{{ $e := 3 }}{{ range $i, $e }}{{ $i }}{{ . }}{{ end }}".into()),
        ("range-paren-decl", "{{ range $x := ($n := 2) }}{{ $x }}{{ $n }}{{ end }}".into()),
        ("range-break-continue", "{{ range $i := 10 }}{{ if eq $i 2 }}{{ continue }}{{ end }}{{ if gt $i 5 }}{{ break }}{{ end }}{{ $i }}{{ end }}".into()),
        ("range-nested-break", "{{ range $i := 3 }}{{ range $j := 3 }}{{ if eq $j 1 }}{{ break }}{{ end }}{{ $i }}{{ $j }};{{ end }}{{ continue }}x{{ end }}".into()),
        ("range-break-in-with", "{{ range $i := 5 }}{{ with $i }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}".into()),
        ("range-break-trim", "{{ range 3 -}} x {{- break -}} y {{ end }}z".into()),
        ("range-dot-root", "{{ range 2 }}{{ $.AgentName }}{{ . }}{{ end }}".into()),
        ("range-bool", "{{ range true }}x{{ end }}".into()),
        ("range-float", "{{ range 1.5 }}x{{ end }}".into()),
        ("range-struct", "{{ range . }}x{{ end }}".into()),
        ("range-function-result", "{{ range joinQuoted nil }}x{{ else }}e{{ end }}".into()),
        ("range-call", "{{ range call .AgentName }}x{{ end }}".into()),
        ("range-scope", "{{ range $i := 2 }}{{ $v := $i }}{{ end }}{{ $v }}".into()),
        ("break-outside", "{{ break }}".into()),
        ("continue-outside", "{{ if true }}{{ continue }}{{ end }}".into()),
        ("break-in-define-in-range", "{{ define \"T\" }}{{ break }}{{ end }}{{ range 1 }}{{ template \"T\" }}{{ end }}".into()),
        ("reassign-in-range", "{{ $last := -1 }}{{ range $i := 5 }}{{ $last = $i }}{{ end }}{{ $last }}".into()),
        ("reassign-types", "{{ $x := 1 }}{{ $x = \"s\" }}{{ $x }}{{ $x = .PrismCentralPort }}{{ printf \"%T\" $x }}".into()),
        ("reassign-scoped", "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $x := 3 }}{{ $x = 4 }}{{ $x }}{{ end }}{{ $x }}".into()),
        ("assign-undefined", "{{ $x = 1 }}".into()),
        ("assign-undefined-dead", "{{ if false }}{{ $x = 1 }}{{ end }}ok".into()),
        ("declare-self-dead", "{{ if false }}{{ $x := $x }}{{ end }}ok".into()),
        ("declare-self", "{{ $x := $x }}".into()),
        ("paren-decl", "{{ ($x := 1) }}{{ $x }}".into()),
        ("too-many-decls", "{{ $a, $b := 1 }}".into()),
        // and/or: short-circuit, what they return, and what reaching an error does.
        ("and-or-short-circuit", "{{ and 0 .Nope }}|{{ or 1 .Nope }}|{{ and 1 0 .Nope }}|{{ or \"\" \"x\" .Nope }}".into()),
        ("and-reaches-error", "{{ and 1 .Nope }}".into()),
        ("or-reaches-error", "{{ or 0 .Nope }}".into()),
        ("and-returns-operand", "{{ and .AgentName .PrismCentralPort }}|{{ or .CategoryMappings .PrismCentralPort }}|{{ printf \"%T\" (and 1 .PrismCentralPort) }}".into()),
        ("and-nil", "{{ and nil 1 }}".into()),
        ("or-nil-late", "{{ or 1 nil }}".into()),
        ("and-empty", "{{ and }}".into()),
        ("and-pipe-nil-dead", "{{ define \"T\" }}{{ . | and 0 }}{{ end }}{{ template \"T\" }}".into()),
        ("and-pipe-nil-reached", "{{ define \"T\" }}{{ . | and 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("or-pipe-only", "{{ .AgentName | or }}|{{ \"\" | and }}".into()),
        // A missing value (nil dot) where Go's builtin takes a reflect.Value is an error; where it takes any, not.
        ("nil-dot-not", "{{ define \"T\" }}{{ not . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-len", "{{ define \"T\" }}{{ len . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-index", "{{ define \"T\" }}{{ index . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-slice", "{{ define \"T\" }}{{ slice . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-eq", "{{ define \"T\" }}{{ eq . 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-eq-self", "{{ define \"T\" }}{{ eq . . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-lt", "{{ define \"T\" }}{{ lt . 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-call", "{{ define \"T\" }}{{ call . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-range-if-with", "{{ define \"T\" }}{{ range . }}x{{ else }}r{{ end }}{{ if . }}x{{ else }}i{{ end }}{{ with . }}x{{ else }}w{{ end }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-any", "{{ define \"T\" }}{{ print . }}|{{ printf \"%v\" . }}|{{ html . }}|{{ js . }}|{{ urlquery . }}|{{ joinQuoted . }}|{{ println . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-printf-format", "{{ define \"T\" }}{{ printf . }}{{ end }}{{ template \"T\" }}".into()),
        // index and slice bounds and types.
        ("index-negative", "{{ index .ClusterName -1 }}".into()),
        ("index-at-len", "{{ index .ClusterName (len .ClusterName) }}".into()),
        ("index-last", "{{ index .ClusterName (len (slice .ClusterName 1)) }}".into()),
        ("index-float", "{{ index .ClusterName 1.0 }}".into()),
        ("index-string-key", "{{ index .ClusterName \"0\" }}".into()),
        ("index-nil-key", "{{ index .ClusterName nil }}".into()),
        ("index-nil", "{{ index nil 0 }}".into()),
        ("index-number", "{{ index .PrismCentralPort 0 }}".into()),
        ("index-by-port", "{{ index .ClusterName .PrismCentralPort }}".into()),
        ("index-twice", "{{ index .ClusterName 0 0 }}".into()),
        ("index-bool", "{{ index .ClusterName true }}".into()),
        ("slice-reversed", "{{ slice .ClusterName 2 1 }}".into()),
        ("slice-negative", "{{ slice .ClusterName -1 }}".into()),
        ("slice-four", "{{ slice .ClusterName 0 1 2 3 }}".into()),
        ("slice-number", "{{ slice .PrismCentralPort }}".into()),
        ("slice-nil", "{{ slice nil }}".into()),
        ("slice-at-len", "[{{ slice .ClusterName (len .ClusterName) }}][{{ slice .ClusterName 0 0 }}]".into()),
        ("slice-by-port", "{{ slice .ClusterName 0 .PrismCentralPort }}".into()),
        ("slice-float", "{{ slice .ClusterName 0.0 }}".into()),
        // Comparisons.
        ("eq-multi", "{{ eq .ClusterName \"a\" \"b\" .ClusterName }} {{ eq .PrismCentralPort 1 443 9440 }} {{ eq 1 2 3 }}".into()),
        ("eq-error-after-match", "{{ eq 1 1 \"x\" }}".into()),
        ("eq-error-before-match", "{{ eq 1 \"x\" 1 }}".into()),
        ("eq-struct", "{{ eq . . }} {{ eq . $ }} {{ ne . . }} {{ $v := . }}{{ eq $v . }}".into()),
        ("eq-struct-int", "{{ eq . 1 }}".into()),
        ("lt-struct", "{{ lt . . }}".into()),
        ("compare-uint-int", "{{ eq 9440 .PrismCentralPort }} {{ lt -1 .PrismCentralPort }} {{ lt .PrismCentralPort -1 }} {{ ge .PrismCentralPort 0 }} {{ gt 100000 .PrismCentralPort }} {{ le .PrismCentralPort 443 }}".into()),
        ("compare-byte-port", "{{ eq (index .ClusterName 0) .PrismCentralPort }} {{ lt (index .ClusterName 0) .PrismCentralPort }}".into()),
        ("compare-float", "{{ lt 1.5 2.5 }} {{ eq 1.5 1.5 }} {{ le 2.0 2.0 }} {{ gt 1e3 999.0 }} {{ ne 0.5 0.25 }}".into()),
        ("compare-float-int", "{{ lt 1 1.5 }}".into()),
        ("compare-string-order", "{{ lt \"a\" \"b\" }} {{ gt \"b\" \"a\" }} {{ le \"a\" \"a\" }} {{ ge \"a\" \"b\" }} {{ lt \"Z\" \"a\" }} {{ lt \"é\" \"z\" }}".into()),
        ("compare-bools-eq", "{{ ne true false }} {{ eq false false }} {{ eq .PrismCentralInsecure .EnableKubeconfigUpload }}".into()),
        ("compare-bool-ge", "{{ ge true true }}".into()),
        ("compare-bool-le", "{{ le false true }}".into()),
        ("compare-string-int", "{{ ne \"1\" 1 }}".into()),
        ("eq-one-arg", "{{ eq 1 }}".into()),
        ("ne-three", "{{ ne 1 2 3 }}".into()),
        ("lt-one", "{{ lt 1 }}".into()),
        ("lt-nil", "{{ lt nil 1 }}".into()),
        ("eq-nil", "{{ eq nil nil }}".into()),
        // The other builtins' argument rules.
        ("len-number", "{{ len 3 }}".into()),
        ("len-struct", "{{ len . }}".into()),
        ("len-nil", "{{ len nil }}".into()),
        ("len-two", "{{ len \"a\" \"b\" }}".into()),
        ("not-values", "{{ not 0 }} {{ not \"\" }} {{ not . }} {{ not \"x\" }} {{ not 0.0 }} {{ not .PrismCentralPort }}".into()),
        ("not-two", "{{ not 1 2 }}".into()),
        ("not-none", "{{ not }}".into()),
        ("print-variants", "{{ print \"a\" \"b\" 1 2 \"c\" }}|{{ print nil nil }}|{{ println nil \"x\" 1 }}|{{ print 1.5 true }}".into()),
        ("printf-number-format", "{{ printf 1 }}".into()),
        ("printf-port-format", "{{ printf .PrismCentralPort }}".into()),
        ("printf-none", "{{ printf }}".into()),
        ("escapers-multi", "{{ html \"a\" 1 \"<\" }}|{{ js 1 2 }}|{{ urlquery nil }}|[{{ html }}]|{{ js .PrismCentralPort }}|{{ urlquery \"a\" \"b c\" }}".into()),
        ("call-none", "{{ call }}".into()),
        ("call-nil", "{{ call nil }}".into()),
        ("call-function-name", "{{ call joinQuoted }}".into()),
        ("call-number", "{{ call 1 2 }}".into()),
        ("joinQuoted-two", "{{ joinQuoted nil nil }}".into()),
        ("joinQuoted-none", "{{ joinQuoted }}".into()),
        ("eq-nil-mixed", "{{ eq . nil }} {{ eq nil . }} {{ eq 1 nil }} {{ eq nil \"\" }} {{ ne nil nil }} {{ eq nil 1 nil }}".into()),
        ("range-nested-vars", "{{ range $i := 2 }}{{ range $j := 2 }}{{ $i }}{{ $j }} {{ end }}{{ end }}".into()),
        ("range-var-shadow", "{{ $i := \"outer\" }}{{ range $i := 2 }}{{ $i }}{{ end }}{{ $i }}".into()),
        ("range-assign-two", "{{ $a := 0 }}{{ $b := 0 }}{{ range $a, $b = 2 }}{{ end }}".into()),
        ("range-continue-in-else", "{{ range 0 }}{{ else }}{{ range 1 }}{{ continue }}{{ end }}e{{ end }}".into()),
        ("range-break-in-else-of-inner", "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ end }}{{ $i }}{{ end }}".into()),
        ("range-continue-in-else-of-inner", "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ end }}{{ $i }}{{ end }}".into()),
        ("else-with-range", "{{ with 0 }}{{ else with 3 }}{{ range . }}{{ . }}{{ end }}{{ end }}".into()),
        ("block-range", "{{ block \"B\" 3 }}{{ range . }}{{ . }}{{ end }}{{ end }}".into()),
        ("template-range-port", "{{ define \"T\" }}{{ range . }}{{ if ge . 5 }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}{{ template \"T\" .PrismCentralPort }}".into()),
        ("printf-struct-verbs", "{{ printf \"%d|%s|%q|%x|%5v|%t|%-3d|%X\" . . . . . . . . }}".into()),
        ("printf-struct-plus-v", "{{ printf \"%+v|%+d|%+5v\" . . . }}".into()),
        ("printf-sharp-v", "{{ printf \"%#v\" . }}".into()),
        ("printf-q-known-code-points", "{{ printf \"%q %q %q %q %q %q\" 880 65535 57344 8364 9733 \"a\\u00ad✓€\" }}|{{ js \"✓\\u200b\" }}".into()),
        ("printf-q-unassigned", "{{ printf \"%q\" 888 }}".into()),
        ("printf-sharp-x-string", "{{ printf \"[%#x][%#X][%#8x][%-#8x][%#.1x][%#x]\" .ClusterName \"ab\" \"a\" \"a\" \"ab\" .CategoryMappings }}".into()),
        ("printf-bad-verb-width", "{{ printf \"[%5d][%-4t][%.2d][%6x]\" .AgentName .PrismCentralPort .ClusterName .PrismCentralInsecure }}".into()),
        ("range-huge", "{{ range 1000001 }}{{ end }}ok".into()),
        ("range-at-limit", "{{ range 999 }}{{ range 1000 }}{{ end }}{{ end }}ok".into()),
    ];
    c.sort_by_key(|(name, _)| *name);
    c
}

/// CAREN's template variables in the reference program's declaration order, with the Go type of each.
const FIELDS: [(&str, Kind); 12] = [
    ("AgentName", Kind::Str),
    ("PrismCentralHost", Kind::Str),
    ("PrismCentralPort", Kind::Port),
    ("PrismCentralInsecure", Kind::Bool),
    ("PrismCentralAdditionalTrustBundle", Kind::Str),
    ("CreateAdditionalTrustBundleConfigMap", Kind::Bool),
    ("AdditionalTrustBundleConfigMapName", Kind::Str),
    ("ClusterName", Kind::Str),
    ("CategoryMappings", Kind::Str),
    ("PrismCredentialsSecretName", Kind::Str),
    ("EnableKubeconfigUpload", Kind::Bool),
    ("ControlPlaneEndpoint", Kind::Str),
];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Port,
    Bool,
}

/// One input as the reference program reads it (a JSON object of the variables) and as the engine takes it (the
/// same struct, type `main.values` as Go names the program's type).
fn data(values: &Json) -> Value {
    let fields = FIELDS
        .iter()
        .map(|(name, kind)| {
            let v = &values[*name];
            let value = match kind {
                Kind::Str => Value::Str(v.as_str().unwrap().to_owned()),
                Kind::Port => Value::Uint(u64::from(u16::try_from(v.as_u64().unwrap()).unwrap()), "uint16"),
                Kind::Bool => Value::Bool(v.as_bool().unwrap()),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    Value::Struct(fields, "main.values")
}

/// `base` with the named variables replaced.
fn with(base: &Json, changes: Json) -> Json {
    let mut v = base.clone();
    for (k, x) in changes.as_object().unwrap() {
        assert!(FIELDS.iter().any(|(name, _)| name == k), "{k} is no variable");
        v[k] = x.clone();
    }
    v
}

/// Varied inputs: CAREN's reference example, a trust bundle with categories, no endpoint, the longest name, a
/// numeric name, IPv6, non-ASCII categories, an empty category list with insecure Prism Central.
fn inputs() -> Vec<Json> {
    let base = json!({
        "AgentName": "konnector-agent",
        "PrismCentralHost": "pc.example.com",
        "PrismCentralPort": 9440,
        "PrismCentralInsecure": true,
        "PrismCentralAdditionalTrustBundle": "",
        "CreateAdditionalTrustBundleConfigMap": false,
        "AdditionalTrustBundleConfigMapName": "",
        "ClusterName": "my-cluster",
        "CategoryMappings": "",
        "PrismCredentialsSecretName": "konnector-agent",
        "EnableKubeconfigUpload": true,
        "ControlPlaneEndpoint": "https://10.0.0.10:6443",
    });
    vec![
        base.clone(),
        with(
            &base,
            json!({
                "PrismCentralInsecure": false,
                "PrismCentralAdditionalTrustBundle": "QlVORExF",
                "CreateAdditionalTrustBundleConfigMap": true,
                "AdditionalTrustBundleConfigMapName": "ntnx-additional-trust-bundle-konnector-agent",
                "CategoryMappings": "Environment=Production,Department=Engineering",
            }),
        ),
        with(
            &base,
            json!({"EnableKubeconfigUpload": false, "ControlPlaneEndpoint": "", "PrismCentralPort": 443}),
        ),
        with(&base, json!({"ClusterName": "a".repeat(40)})),
        with(&base, json!({"ClusterName": "1234", "PrismCentralPort": 1})),
        with(
            &base,
            json!({"PrismCentralHost": "fd00::1", "ControlPlaneEndpoint": "https://fd00::2:6443"}),
        ),
        with(
            &base,
            json!({"CategoryMappings": "Région=Île (1),App-Tier=web/front end", "ClusterName": "z", "PrismCentralPort": 65535}),
        ),
    ]
}

/// The engine's rendering of one case.
fn ours(template: &str, values: &Json) -> Result<String, konnector_gotemplate::Error> {
    render(template, data(values))
}

/// The engine takes the data as the reference program declares it: every variable, in order, with its Go type.
#[test]
fn inputs_are_the_reference_programs_struct() {
    let v = &inputs()[0];
    assert_eq!(
        ours(
            "{{ printf \"%T %T %T %T\" . .PrismCentralPort .ClusterName .EnableKubeconfigUpload }}",
            v
        )
        .unwrap(),
        "main.values uint16 string bool"
    );
    assert_eq!(
        ours("{{ printf \"%+v\" . }}", v).unwrap(),
        "{AgentName:konnector-agent PrismCentralHost:pc.example.com PrismCentralPort:9440 PrismCentralInsecure:true \
         PrismCentralAdditionalTrustBundle: CreateAdditionalTrustBundleConfigMap:false AdditionalTrustBundleConfigMapName: \
         ClusterName:my-cluster CategoryMappings: PrismCredentialsSecretName:konnector-agent EnableKubeconfigUpload:true \
         ControlPlaneEndpoint:https://10.0.0.10:6443}"
    );
}

#[test]
fn konnector_renders_what_go_text_template_renders() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let corpus = corpus();
    let inputs = inputs();
    let mut cases = Vec::new();
    for (name, template) in &corpus {
        for (i, v) in inputs.iter().enumerate() {
            cases.push((*name, i, template.as_str(), v));
        }
    }
    let requests = Json::Array(
        cases
            .iter()
            .map(|(_, _, t, v)| json!({"template": t, "values": v}))
            .collect(),
    );
    let go = go_render(&bin, &requests);
    assert_eq!(go.len(), cases.len());

    let mut differing = BTreeSet::new();
    let mut report = String::new();
    let mut go_ok = 0;
    for ((name, i, template, v), go) in cases.iter().zip(&go) {
        let ours = ours(template, v);
        go_ok += usize::from(go.is_ok());
        // Both render the same bytes, or both fail; a failure never matches a success.
        let same = match (&ours, go) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            (Ok(_), Err(_)) | (Err(_), Ok(_)) => false,
        };
        if !same {
            differing.insert(*name);
            report.push_str(&format!(
                "\n--- {name} (input {i})\n konnector: {ours:?}\n go:        {go:?}"
            ));
        }
    }
    // The corpus must exercise real rendering, not only errors.
    assert!(
        go_ok * 2 > cases.len(),
        "most cases must render in Go ({go_ok} of {})",
        cases.len()
    );

    let known: BTreeSet<&str> = KNOWN_GAPS.iter().map(|(name, _)| *name).collect();
    let unexpected: Vec<_> = differing.difference(&known).collect();
    let closed: Vec<_> = known.difference(&differing).collect();
    assert!(
        unexpected.is_empty() && closed.is_empty(),
        "konnector and Go text/template differ beyond the known gaps.\nunexpected: {unexpected:?}\nknown gaps that no longer differ: {closed:?}{report}"
    );
    // Each known gap is a refusal on konnector's side, never different bytes.
    for ((name, _, template, v), go) in cases.iter().zip(&go) {
        if known.contains(name) {
            assert!(ours(template, v).is_err() && go.is_ok(), "{name}");
        }
    }
    eprintln!(
        "{} cases ({} templates x {} inputs), {} rendered by Go, known gaps: {:?}",
        cases.len(),
        corpus.len(),
        inputs.len(),
        go_ok,
        known
    );
}

/// A small deterministic generator (xorshift64*), so the generated corpus is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// An operand: a constant of each kind, a field (rarely one that does not exist), dot, the root, a variable,
    /// or a parenthesized call.
    fn term(&mut self, depth: usize) -> String {
        if depth > 0 && self.below(4) == 0 {
            return format!("({})", self.call(depth - 1));
        }
        if self.below(40) == 0 {
            return ".Nope".to_owned();
        }
        self.pick(&[
            "0",
            "1",
            "-1",
            "3",
            "1.5",
            "0.0",
            "\"a\"",
            "\"\"",
            "\"my-cluster\"",
            "true",
            "false",
            "nil",
            "'x'",
            "0x10",
            ".ClusterName",
            ".PrismCentralPort",
            ".PrismCentralInsecure",
            ".CategoryMappings",
            ".AgentName",
            ".",
            "$",
            "$x",
        ])
        .to_owned()
    }

    /// An operand of one kind, so that most generated calls are well typed and render.
    fn typed(&mut self, kind: usize) -> String {
        let items: &[&str] = match kind {
            0 => &[
                "\"abc\"",
                "\"\"",
                ".ClusterName",
                ".CategoryMappings",
                ".AgentName",
                "(print 1)",
            ],
            1 => &["0", "1", "2", "3", "-1", "(len .AgentName)", "'a'"],
            2 => &[".PrismCentralPort", "(index .ClusterName 0)"],
            3 => &["1.5", "0.0", "2.5"],
            _ => &[
                "true",
                "false",
                ".PrismCentralInsecure",
                ".EnableKubeconfigUpload",
            ],
        };
        self.pick(items).to_owned()
    }

    /// A builtin call, usually with a count and kinds of operands the builtin takes, sometimes not (so argument
    /// counts and kind errors are exercised too).
    fn call(&mut self, depth: usize) -> String {
        let name = self.pick(&[
            "and",
            "or",
            "not",
            "len",
            "index",
            "slice",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "print",
            "println",
            "html",
            "js",
            "urlquery",
            "call",
            "joinQuoted",
            "printf",
        ]);
        let mut args: Vec<String> = Vec::new();
        if self.below(8) == 0 {
            for _ in 0..self.below(4) {
                args.push(self.term(depth));
            }
        } else {
            match name {
                "len" => args.push(self.typed(0)),
                "index" | "slice" => {
                    args.push(self.typed(0));
                    for _ in 0..self.below(3) {
                        let small = self.pick(&["0", "1", "2", ".PrismCentralPort"]);
                        args.push(small.to_owned());
                    }
                }
                "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                    let kind = self.below(5);
                    let n = if name == "eq" { 2 + self.below(2) } else { 2 };
                    for _ in 0..n {
                        // Mixed signed/unsigned integers compare; other kinds mostly match.
                        let k = if kind == 1 && self.below(3) == 0 { 2 } else { kind };
                        args.push(self.typed(k));
                    }
                }
                "not" | "call" | "joinQuoted" => args.push(self.term(depth)),
                "printf" => {
                    let format = self.pick(&[
                        "\"%v\"",
                        "\"%d\"",
                        "\"%s\"",
                        "\"%q\"",
                        "\"%t\"",
                        "\"%v|%v\"",
                        "\"%5v\"",
                        "\"%-4s|\"",
                        "\"%05d\"",
                        "\"%x\"",
                        "\"%X\"",
                        "\"%o\"",
                        "\"%c\"",
                        "\"%U\"",
                        "\"%e\"",
                        "\"%.2f\"",
                        "\"%8.3f\"",
                        "\"%+d\"",
                        "\"% d\"",
                        "\"%#x\"",
                        "\"%T\"",
                        "\"%.1s\"",
                        "\"%6.2v\"",
                        "\"%g\"",
                        "\"%b\"",
                        "\"%%%v\"",
                    ]);
                    args.push(format.to_owned());
                    for _ in 0..self.below(3) {
                        args.push(self.term(depth));
                    }
                }
                _ => {
                    for _ in 0..1 + self.below(3) {
                        args.push(self.term(depth));
                    }
                }
            }
        }
        std::iter::once(name.to_owned())
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn pipeline(&mut self, depth: usize) -> String {
        let mut p = if self.below(6) == 0 {
            self.term(depth).replace("nil", "\"n\"")
        } else {
            self.call(depth)
        };
        if self.below(5) == 0 {
            // A later stage gets the value as its last operand, so it takes one operand fewer.
            p.push_str(" | ");
            p.push_str(self.pick(&[
                "print",
                "printf \"%v\"",
                "and 1",
                "or 0",
                "html",
                "len",
                "not",
                "eq 1",
                "urlquery",
                "index \"abc\"",
            ]));
        }
        p
    }

    /// What a range may iterate over: small integers (so nested loops stay small), nil, and things Go refuses.
    fn range_operand(&mut self) -> String {
        self.pick(&[
            "0",
            "1",
            "2",
            "3",
            "-1",
            "nil",
            "2",
            "3",
            "1",
            "(len .AgentName)",
            "(len .CategoryMappings)",
            "$x",
            "\"a\"",
            "true",
            "1.5",
            ".",
        ])
        .to_owned()
    }

    fn block(&mut self, depth: usize, in_range: bool) -> String {
        (0..1 + self.below(2))
            .map(|_| self.stmt(depth, in_range))
            .collect()
    }

    fn stmt(&mut self, depth: usize, in_range: bool) -> String {
        let choice = if depth == 0 { self.below(4) } else { self.below(10) };
        match choice {
            0 => self.pick(&["a", " ", "\n", "-"]).to_owned(),
            1 | 2 => format!("{{{{ {} }}}}", self.pipeline(depth)),
            3 => format!("{{{{ $x = {} }}}}", self.pipeline(depth)),
            4 => {
                let mut s = format!(
                    "{{{{ if {} }}}}{}",
                    self.pipeline(depth),
                    self.block(depth - 1, in_range)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!(
                        "{{{{ else if {} }}}}{}",
                        self.pipeline(depth),
                        self.block(depth - 1, in_range)
                    ));
                }
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            5 => {
                let mut s = format!(
                    "{{{{ with {} }}}}{}",
                    self.pipeline(depth),
                    self.block(depth - 1, in_range)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!(
                        "{{{{ else with {} }}}}{}",
                        self.pipeline(depth),
                        self.block(depth - 1, in_range)
                    ));
                }
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            6 | 7 => {
                let decl = self.pick(&["", "$i := ", "", "$i := ", "$i, $e := ", "$x = "]);
                let mut s = format!(
                    "{{{{ range {decl}{} }}}}{}",
                    self.range_operand(),
                    self.block(depth - 1, true)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            _ if in_range => {
                let word = self.pick(&["break", "continue"]);
                format!("{{{{ if {} }}}}{{{{ {word} }}}}{{{{ end }}}}", self.pipeline(0))
            }
            _ => format!("{{{{ {} }}}}", self.call(depth)),
        }
    }
}

/// Thousands of generated templates that combine the control structures and builtins at random, each rendered by
/// konnector and by Go: the corpus above names the cases people think of, this finds the combinations they do not.
/// Every pair must match (same bytes, or both fail), except where konnector refuses a `printf` verb/operand pair it
/// does not implement, which the engine documents as a refusal, never a guess.
#[test]
fn generated_templates_render_as_go_renders_them() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let mut generator = Gen(0x5EED_0FC0_FFEE);
    let templates: Vec<String> = (0..4000)
        .map(|_| {
            let x = generator.term(1).replace("nil", "\"n\"");
            format!("{{{{ $x := {x} }}}}{}", generator.block(3, false))
        })
        .collect();
    let all = inputs();
    let chosen = [&all[0], &all[4]];
    let mut cases = Vec::new();
    for t in &templates {
        for v in chosen {
            cases.push((t.as_str(), v));
        }
    }
    let go = go_render(
        &bin,
        &Json::Array(
            cases
                .iter()
                .map(|(t, v)| json!({"template": t, "values": v}))
                .collect(),
        ),
    );
    let (mut go_ok, mut refused, mut wrong) = (0, 0, Vec::new());
    for ((template, v), go) in cases.iter().zip(&go) {
        let ours = ours(template, v);
        go_ok += usize::from(go.is_ok());
        match (&ours, go) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) if e.to_string().contains("is not supported") => refused += 1,
            _ => wrong.push(format!("{template:?}\n konnector: {ours:?}\n go:        {go:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} generated cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        go_ok * 3 > cases.len(),
        "only {go_ok} of {} rendered in Go",
        cases.len()
    );
    eprintln!(
        "{} generated cases, {go_ok} rendered by Go, {refused} refused by konnector as not supported",
        cases.len()
    );
}

/// Template text assembled from the lexer's and parser's tokens at random (delimiters, trim markers, comments,
/// quotes, keywords, operators): parse errors and their absence must match Go's, and so must the output.
#[test]
fn token_soup_parses_and_renders_as_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let tokens = [
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "-",
        " ",
        "\n",
        "/*",
        "*/",
        "\"",
        "`",
        "'",
        ".",
        ".ClusterName",
        "$",
        "$x",
        ":=",
        "=",
        "(",
        ")",
        "|",
        ",",
        "1",
        "x",
        "if",
        "else",
        "end",
        "range",
        "with",
        "break",
        "continue",
        "define",
        "template",
        "block",
        "\"T\"",
        "nil",
        "true",
        "print",
        "and",
        "not",
        "\\",
    ];
    let mut generator = Gen(0x70C3_5009);
    let texts: Vec<String> = (0..6000)
        .map(|_| {
            (0..1 + generator.below(10))
                .map(|_| generator.pick(&tokens))
                .collect::<String>()
        })
        .collect();
    let v = inputs().remove(0);
    let go = go_render(
        &bin,
        &Json::Array(
            texts
                .iter()
                .map(|t| json!({"template": t, "values": v}))
                .collect(),
        ),
    );
    let (mut go_ok, mut wrong) = (0, Vec::new());
    for (text, go) in texts.iter().zip(&go) {
        let ours = ours(text, &v);
        go_ok += usize::from(go.is_ok());
        let same = match (&ours, go) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            wrong.push(format!("{text:?}\n konnector: {ours:?}\n go:        {go:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        texts.len(),
        wrong.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{} token soups, {go_ok} rendered by Go", texts.len());
}
