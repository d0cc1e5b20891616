// Command render is the reference side of konnector's template differential test
// (tests/tests/template_differential.rs): it renders values templates with Go's own text/template, the way CAREN
// does (one extra function, joinQuoted, and a struct of CAREN's template variable names and types).
//
// Input on stdin: a JSON array of {"template": string, "values": {<variable>: value}}.
// Output on stdout: a JSON array, one {"ok": bool, "out": string} per input; out is the error text when !ok.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// values mirrors the variables CAREN passes to the template, with CAREN's Go types.
type values struct {
	AgentName                            string
	PrismCentralHost                     string
	PrismCentralPort                     uint16
	PrismCentralInsecure                 bool
	PrismCentralAdditionalTrustBundle    string
	CreateAdditionalTrustBundleConfigMap bool
	AdditionalTrustBundleConfigMapName   string
	ClusterName                          string
	CategoryMappings                     string
	PrismCredentialsSecretName           string
	EnableKubeconfigUpload               bool
	ControlPlaneEndpoint                 string
}

type request struct {
	Template string `json:"template"`
	Values   values `json:"values"`
}

type result struct {
	OK  bool   `json:"ok"`
	Out string `json:"out"`
}

// joinQuoted is CAREN's one template function: each item %q-quoted, joined by ", ".
func joinQuoted(items []string) string {
	quoted := make([]string, len(items))
	for i, item := range items {
		quoted[i] = fmt.Sprintf("%q", item)
	}
	return strings.Join(quoted, ", ")
}

func render(r request) result {
	t, err := template.New("values").Funcs(template.FuncMap{"joinQuoted": joinQuoted}).Parse(r.Template)
	if err != nil {
		return result{Out: "parse: " + err.Error()}
	}
	var b bytes.Buffer
	if err := t.Execute(&b, r.Values); err != nil {
		return result{Out: "execute: " + err.Error()}
	}
	return result{OK: true, Out: b.String()}
}

func main() {
	var reqs []request
	if err := json.NewDecoder(os.Stdin).Decode(&reqs); err != nil {
		fmt.Fprintln(os.Stderr, "decoding the requests:", err)
		os.Exit(2)
	}
	out := make([]result, len(reqs))
	for i, r := range reqs {
		out[i] = render(r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "encoding the results:", err)
		os.Exit(2)
	}
}
