// Package deploy holds the tests that validate sekisho's deployment files
// without a Docker engine or a Kubernetes cluster:
//
//   - compose/compose.yaml is loaded by the Compose specification's own Go
//     loader (github.com/compose-spec/compose-go/v2), schema-validated;
//   - kubernetes/ is rendered by kustomize's own library (what
//     `kubectl apply -k` does) and every object is decoded strictly into the
//     official k8s.io/api types, unknown fields rejected;
//   - the Dockerfile's build step is compared flag for flag with build.sh;
//   - the systemd unit, firewall snippets and browser policies are checked
//     for the settings that matter.
//
// Each test also checks that the files agree with each other and with
// sekisho's configuration: ports, paths, probes, the admin address that
// Prometheus scrapes. Tools that cannot be imported (systemd-analyze,
// promtool, nft) are run by .ci/run.
//
// It is its own module so that the main go.mod stays lean.
package deploy
