// crdcheck validates the Prometheus Operator resources a Helm chart renders (ServiceMonitor,
// PrometheusRule): Kubernetes' own schemas do not cover them, so each is decoded strictly into
// the operator's API types (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring,
// pinned in go.mod): an unknown or misspelt field, a field at the wrong level or a value of the
// wrong type fails, as `kubectl apply --validate=strict` would against the installed CRD.
// Fields the CRD requires are checked too (a ServiceMonitor's selector and endpoints; a rule's
// expr and alert or record name).
//
// usage: crdcheck FILE...   (multi-document YAML; other kinds are skipped)
// exit 0: every such resource valid; 1: any failure, each printed.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

func main() {
	failures := 0
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", path, err)
			failures++
			continue
		}
		dec := yamlv3.NewDecoder(bytes.NewReader(data))
		for {
			var node yamlv3.Node
			if err := dec.Decode(&node); err == io.EOF {
				break
			} else if err != nil {
				fmt.Printf("FAIL %s: %v\n", path, err)
				failures++
				break
			}
			doc, err := yamlv3.Marshal(&node)
			if err != nil {
				fmt.Printf("FAIL %s: %v\n", path, err)
				failures++
				continue
			}
			if msg, checked := check(doc); checked {
				if msg != "" {
					fmt.Printf("FAIL %s %s\n", path, msg)
					failures++
				}
			}
		}
	}
	if failures > 0 {
		fmt.Printf("%d invalid\n", failures)
		os.Exit(1)
	}
	fmt.Println("all valid")
}

// check validates one document; checked is false for kinds other than the operator's.
func check(doc []byte) (msg string, checked bool) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
		return "", false
	}
	name := meta.Kind + "/" + meta.Metadata.Name
	switch meta.Kind {
	case "ServiceMonitor":
		var sm monitoringv1.ServiceMonitor
		if err := strict(doc, meta.APIVersion, &sm); err != "" {
			return name + ": " + err, true
		}
		if len(sm.Spec.Selector.MatchLabels) == 0 && len(sm.Spec.Selector.MatchExpressions) == 0 {
			return name + ": spec.selector selects nothing", true
		}
		if len(sm.Spec.Endpoints) == 0 {
			return name + ": spec.endpoints is empty", true
		}
	case "PrometheusRule":
		var pr monitoringv1.PrometheusRule
		if err := strict(doc, meta.APIVersion, &pr); err != "" {
			return name + ": " + err, true
		}
		rules := 0
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				rules++
				if r.Expr.String() == "" || (r.Alert == "") == (r.Record == "") {
					return fmt.Sprintf("%s: group %s: a rule needs expr and one of alert or record", name, g.Name), true
				}
			}
		}
		if rules == 0 {
			return name + ": no rules", true
		}
	default:
		return "", false
	}
	fmt.Printf("ok   %s: valid (strict) for %s\n", name, meta.APIVersion)
	return "", true
}

func strict(doc []byte, apiVersion string, into any) string {
	if apiVersion != monitoringv1.SchemeGroupVersion.String() {
		return fmt.Sprintf("apiVersion %q, want %q", apiVersion, monitoringv1.SchemeGroupVersion.String())
	}
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		return err.Error()
	}
	return ""
}
