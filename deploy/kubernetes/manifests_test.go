// Package kubernetes_test checks the example manifests without a cluster:
// every document decodes strictly into the Kubernetes API types, the probes
// point at ports and routes that exist, and the sidecar's Caddyfile adapts
// and provisions with this module.
package kubernetes_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	_ "github.com/caddy-entra/caddy-entra/caddymodule"
)

// manifests holds every decoded document, by kind.
type manifests struct {
	deployments     []*appsv1.Deployment
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	serviceAccounts []*corev1.ServiceAccount
	services        []*corev1.Service
}

// load decodes every YAML document under the directory strictly: an unknown
// field or kind is an error.
func load(t *testing.T) manifests {
	t.Helper()
	var m manifests
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if err := m.decode(doc); err != nil {
				return fmt.Errorf("%s, document %d: %v", path, i+1, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *manifests) decode(doc []byte) error {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return err
	}
	var target any
	switch meta.APIVersion + " " + meta.Kind {
	case "apps/v1 Deployment":
		d := new(appsv1.Deployment)
		m.deployments, target = append(m.deployments, d), d
	case "v1 ConfigMap":
		c := new(corev1.ConfigMap)
		m.configMaps, target = append(m.configMaps, c), c
	case "v1 Secret":
		s := new(corev1.Secret)
		m.secrets, target = append(m.secrets, s), s
	case "v1 ServiceAccount":
		s := new(corev1.ServiceAccount)
		m.serviceAccounts, target = append(m.serviceAccounts, s), s
	case "v1 Service":
		s := new(corev1.Service)
		m.services, target = append(m.services, s), s
	default:
		return fmt.Errorf("unexpected kind %q %q", meta.APIVersion, meta.Kind)
	}
	return yaml.UnmarshalStrict(doc, target)
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := load(t)
	if len(m.deployments) != 2 || len(m.configMaps) != 2 || len(m.secrets) != 2 || len(m.serviceAccounts) != 1 || len(m.services) != 1 {
		t.Errorf("found %d deployments, %d config maps, %d secrets, %d service accounts, %d services",
			len(m.deployments), len(m.configMaps), len(m.secrets), len(m.serviceAccounts), len(m.services))
	}
}

// sidecarOf returns the app's Deployment and its sidecar container.
func sidecarOf(t *testing.T, m manifests) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.InitContainers {
			if c.Name == "caddy-entra" {
				return d, c
			}
		}
	}
	t.Fatal("no deployment has the caddy-entra init container")
	return nil, corev1.Container{}
}

func TestSidecarIsANativeSidecarThatCannotBeReconfiguredFromTheApp(t *testing.T) {
	m := load(t)
	d, sidecar := sidecarOf(t, m)
	pod := d.Spec.Template.Spec
	if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar is not a native sidecar (init container with restartPolicy Always)")
	}
	if sidecar.StartupProbe == nil || sidecar.ReadinessProbe == nil || sidecar.LivenessProbe == nil {
		t.Fatal("the sidecar lacks a startup, readiness or liveness probe")
	}
	sc := sidecar.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the sidecar's root filesystem is writable or it may escalate privileges")
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the pod may run as root")
	}
	if sidecar.Resources.Requests.Memory().IsZero() || sidecar.Resources.Limits.Memory().IsZero() {
		t.Error("the sidecar has no memory request or limit")
	}
	// The admin socket's volume is mounted by the sidecar alone.
	socketDir := "/run/caddy-entra"
	var socketVolume string
	for _, mount := range sidecar.VolumeMounts {
		if mount.MountPath == socketDir {
			socketVolume = mount.Name
		}
	}
	if socketVolume == "" {
		t.Fatalf("the sidecar mounts nothing at %s", socketDir)
	}
	for _, c := range append(slices.Clone(pod.Containers), pod.InitContainers...) {
		for _, mount := range c.VolumeMounts {
			if c.Name != sidecar.Name && (mount.Name == socketVolume || strings.HasPrefix(socketDir, mount.MountPath)) {
				t.Errorf("container %s can reach the admin socket through %s", c.Name, mount.MountPath)
			}
		}
	}
}

// adapted is a Caddyfile of a ConfigMap, adapted to JSON.
type adapted struct {
	Admin struct {
		Listen string `json:"listen"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			Servers map[string]struct {
				Listen []string          `json:"listen"`
				Routes []json.RawMessage `json:"routes"`
			} `json:"servers"`
		} `json:"http"`
	} `json:"apps"`
	raw []byte
}

// adaptConfigMap adapts and provisions the Caddyfile of cm as `caddy run`
// would, with the environment the Deployment gives it.
func adaptConfigMap(t *testing.T, cm *corev1.ConfigMap) adapted {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("eyJ.e30.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{
		"AZURE_CLIENT_ID":            "00000000-0000-4000-8000-0000000000c1",
		"AZURE_TENANT_ID":            "00000000-0000-4000-8000-000000000001",
		"AZURE_AUTHORITY_HOST":       "https://login.microsoftonline.com/",
		"AZURE_FEDERATED_TOKEN_FILE": tokenFile,
		"ENTRA_TENANT_ID":            "00000000-0000-4000-8000-000000000001",
		"ENTRA_CLIENT_ID":            "00000000-0000-4000-8000-0000000000c1",
		"ENTRA_CLIENT_SECRET":        "test-secret",
		"REDIS_URL":                  "redis://127.0.0.1:1/0",
		"ENTRA_REDIS_KEY":            base64.StdEncoding.EncodeToString(make([]byte, 32)),
	} {
		t.Setenv(name, value)
	}
	caddyfile, ok := cm.Data["Caddyfile"]
	if !ok {
		t.Fatalf("config map %s has no Caddyfile", cm.Name)
	}
	raw, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile of %s: %v", cm.Name, err)
	}
	for _, w := range warnings {
		t.Logf("%s: line %d: %s", cm.Name, w.Line, w.Message)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("the Caddyfile of %s does not provision: %v", cm.Name, err)
	}
	var a adapted
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	a.raw = raw
	return a
}

// serves reports whether a server of cfg listening on port has a route
// matching path whose handlers include handler.
func (a adapted) serves(port int, path, handler string) bool {
	for _, srv := range a.Apps.HTTP.Servers {
		if !slices.ContainsFunc(srv.Listen, func(l string) bool { return strings.HasSuffix(l, fmt.Sprintf(":%d", port)) }) {
			continue
		}
		for _, route := range srv.Routes {
			text := string(route)
			if strings.Contains(text, `"path":["`+path+`"]`) && strings.Contains(text, `"handler":"`+handler+`"`) {
				return true
			}
		}
	}
	return false
}

func TestProbesPointAtRoutesThatExist(t *testing.T) {
	m := load(t)
	_, sidecar := sidecarOf(t, m)
	ports := map[string]int32{}
	for _, p := range sidecar.Ports {
		ports[p.Name] = p.ContainerPort
	}
	portOf := func(port intstr.IntOrString) int {
		if port.Type == intstr.String {
			n, ok := ports[port.StrVal]
			if !ok {
				t.Errorf("a probe names port %q, which the container does not declare", port.StrVal)
			}
			return int(n)
		}
		return port.IntValue()
	}
	for _, cm := range m.configMaps {
		if cm.Name != "caddy-entra" {
			continue
		}
		cfg := adaptConfigMap(t, cm)
		for name, probe := range map[string]*corev1.Probe{"startup": sidecar.StartupProbe, "readiness": sidecar.ReadinessProbe} {
			if probe.HTTPGet == nil || !cfg.serves(portOf(probe.HTTPGet.Port), probe.HTTPGet.Path, "entra_ready") {
				t.Errorf("%s probe: no entra_ready route at %+v", name, probe.HTTPGet)
			}
		}
		live := sidecar.LivenessProbe.HTTPGet
		if live == nil || !cfg.serves(portOf(live.Port), live.Path, "static_response") {
			t.Errorf("liveness probe: no plain route at %+v", live)
		}
		if strings.Contains(string(cfg.raw), "entra_ready") && cfg.serves(portOf(live.Port), live.Path, "entra_ready") {
			t.Error("liveness depends on Entra ID")
		}
		if cfg.Admin.Listen != "unix//run/caddy-entra/admin.sock|0600" {
			t.Errorf("config map %s: admin listens on %q, want the Unix socket with mode 0600", cm.Name, cfg.Admin.Listen)
		}
	}
}
