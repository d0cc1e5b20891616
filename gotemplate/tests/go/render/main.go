// Command render is the reference side of konnector's template tests (gotemplate/tests/template_differential.rs,
// tests/tests/caaph_rendering.rs). It has two modes, both reading a JSON array of requests on stdin and writing a
// JSON array of {"ok": bool, "out": string} on stdout, one per request (out is the error text when !ok):
//
//   - default: renders values templates with Go's own text/template the way CAREN does (one extra function,
//     joinQuoted, and a struct of CAREN's template variable names and types). Requests are
//     {"template": string, "values": {<variable>: value}}.
//   - -caaph: renders text the way CAAPH renders a HelmChartProxy's spec.valuesTemplate: text/template with
//     Sprig's text functions except env, expandenv and getHostByName, executed against the Cluster. Requests are
//     {"template": string, "cluster": object}. This is the second rendering whatever konnector writes goes through.
//
// With -version it prints the Go version it was built with, so the test can refuse a reference built by a Go
// older than the one CAREN and CAAPH are built with.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
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
	Template string         `json:"template"`
	Values   values         `json:"values"`
	Cluster  map[string]any `json:"cluster"`
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

func execute(t *template.Template, src string, data any) result {
	t, err := t.Parse(src)
	if err != nil {
		return result{Out: "parse: " + err.Error()}
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return result{Out: "execute: " + err.Error()}
	}
	return result{OK: true, Out: b.String()}
}

func renderCAREN(r request) result {
	t := template.New("values").Funcs(template.FuncMap{"joinQuoted": joinQuoted})
	return execute(t, r.Template, r.Values)
}

// caaphFuncs is CAAPH's function map: Sprig's text functions without the three that reach the controller's
// environment or the network.
func caaphFuncs() template.FuncMap {
	funcs := sprig.TxtFuncMap()
	for _, name := range []string{"env", "expandenv", "getHostByName"} {
		delete(funcs, name)
	}
	return funcs
}

// renderCAAPH executes the text as CAAPH does, with the Cluster as `.Cluster` (a map here, so that any field path
// a hostile value names resolves to data instead of failing, which is the harder case for escaping).
func renderCAAPH(r request) result {
	t := template.New("konnector-agent-cluster").Funcs(caaphFuncs())
	data := map[string]any{"Cluster": r.Cluster, "ControlPlane": map[string]any{}}
	return execute(t, r.Template, data)
}

func main() {
	caaph := flag.Bool("caaph", false, "render as CAAPH renders spec.valuesTemplate (text/template plus Sprig)")
	version := flag.Bool("version", false, "print the Go version this program was built with and exit")
	flag.Parse()
	if *version {
		fmt.Println(runtime.Version())
		return
	}
	var reqs []request
	if err := json.NewDecoder(os.Stdin).Decode(&reqs); err != nil {
		fmt.Fprintln(os.Stderr, "decoding the requests:", err)
		os.Exit(2)
	}
	out := make([]result, len(reqs))
	for i, r := range reqs {
		if *caaph {
			out[i] = renderCAAPH(r)
		} else {
			out[i] = renderCAREN(r)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "encoding the results:", err)
		os.Exit(2)
	}
}
