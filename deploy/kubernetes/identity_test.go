package kubernetes_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// sharedIdentity returns why the container named sidecar in pod does not
// run as a user and group of its own: its user or group is left to the
// image, or another container of the pod may run with its user or one of
// its groups (a container's own runAsUser/runAsGroup win over the pod's;
// the pod's fsGroup and supplementalGroups are groups of every container).
// A process of the sidecar's user can bind the sidecar's port beside it
// (SO_REUSEPORT) and take a share of its connections.
func sharedIdentity(pod corev1.PodSpec, sidecar string) []string {
	type identity struct {
		uid    *int64
		groups []int64
	}
	var podUID, podGID *int64
	var podGroups []int64
	if psc := pod.SecurityContext; psc != nil {
		podUID, podGID = psc.RunAsUser, psc.RunAsGroup
		if psc.FSGroup != nil {
			podGroups = append(podGroups, *psc.FSGroup)
		}
		podGroups = append(podGroups, psc.SupplementalGroups...)
	}
	identityOf := func(c corev1.Container) (identity, []string) {
		uid, gid := podUID, podGID
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				uid = sc.RunAsUser
			}
			if sc.RunAsGroup != nil {
				gid = sc.RunAsGroup
			}
		}
		var unset []string
		if uid == nil {
			unset = append(unset, fmt.Sprintf("container %s: runAsUser is left to the image", c.Name))
		}
		if gid == nil {
			unset = append(unset, fmt.Sprintf("container %s: runAsGroup is left to the image", c.Name))
		}
		id := identity{uid: uid, groups: slices.Clone(podGroups)}
		if gid != nil {
			id.groups = append(id.groups, *gid)
		}
		slices.Sort(id.groups)
		id.groups = slices.Compact(id.groups)
		return id, unset
	}
	var problems []string
	var mine *identity
	var others []corev1.Container
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		if c.Name != sidecar {
			others = append(others, c)
			continue
		}
		id, unset := identityOf(c)
		mine, problems = &id, append(problems, unset...)
	}
	if mine == nil {
		return []string{"the pod has no container " + sidecar}
	}
	for _, c := range others {
		id, unset := identityOf(c)
		problems = append(problems, unset...)
		if id.uid != nil && mine.uid != nil && *id.uid == *mine.uid {
			problems = append(problems, fmt.Sprintf("container %s runs as the sidecar's user %d", c.Name, *id.uid))
		}
		for _, g := range id.groups {
			if slices.Contains(mine.groups, g) {
				problems = append(problems, fmt.Sprintf("container %s has the sidecar's group %d", c.Name, g))
			}
		}
	}
	return problems
}

// TestSidecarRunsAsAUserAndGroupOfItsOwn: in the shipped Deployment, no
// other container runs with the sidecar's user or any of its groups, and
// none leaves them to its image. Another process of the sidecar's user
// could bind its loopback port beside it and read the requests (and
// endpoint secrets) sent to it.
func TestSidecarRunsAsAUserAndGroupOfItsOwn(t *testing.T) {
	d, sidecar := sidecarOf(t, load(t))
	for _, problem := range sharedIdentity(d.Spec.Template.Spec, sidecar.Name) {
		t.Error(problem)
	}
}

// TestSharedIdentityIsRefused shows that the check refuses each way a pod
// can give another container the sidecar's user or group.
func TestSharedIdentityIsRefused(t *testing.T) {
	d, sidecar := sidecarOf(t, load(t))
	id := func(n int64) *int64 { return &n }
	for name, change := range map[string]func(pod *corev1.PodSpec){
		"one runAsUser and runAsGroup for the whole pod": func(pod *corev1.PodSpec) {
			pod.SecurityContext.RunAsUser, pod.SecurityContext.RunAsGroup = id(10001), id(10001)
			for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
				for i := range cs {
					cs[i].SecurityContext.RunAsUser, cs[i].SecurityContext.RunAsGroup = nil, nil
				}
			}
		},
		"the app runs as the sidecar's user": func(pod *corev1.PodSpec) {
			pod.Containers[0].SecurityContext.RunAsUser = id(*pod.InitContainers[0].SecurityContext.RunAsUser)
		},
		"the app runs with the sidecar's group": func(pod *corev1.PodSpec) {
			pod.Containers[0].SecurityContext.RunAsGroup = id(*pod.InitContainers[0].SecurityContext.RunAsGroup)
		},
		"the sidecar's user is left to the image": func(pod *corev1.PodSpec) {
			pod.InitContainers[0].SecurityContext.RunAsUser = nil
		},
		"the app's group is left to the image": func(pod *corev1.PodSpec) {
			pod.Containers[0].SecurityContext.RunAsGroup = nil
		},
		"an fsGroup for the pod": func(pod *corev1.PodSpec) {
			pod.SecurityContext.FSGroup = id(10002)
		},
		"a supplemental group for the pod": func(pod *corev1.PodSpec) {
			pod.SecurityContext.SupplementalGroups = []int64{10001}
		},
		"a second container as the sidecar's user": func(pod *corev1.PodSpec) {
			extra := *pod.Containers[0].DeepCopy()
			extra.Name = "debug"
			extra.SecurityContext.RunAsUser = id(*pod.InitContainers[0].SecurityContext.RunAsUser)
			pod.Containers = append(pod.Containers, extra)
		},
	} {
		t.Run(name, func(t *testing.T) {
			pod := d.Spec.Template.Spec.DeepCopy()
			if pod.InitContainers[0].Name != sidecar.Name || pod.Containers[0].Name != "app" {
				t.Fatal("the Deployment's containers moved: update the variants")
			}
			change(pod)
			if problems := sharedIdentity(*pod, sidecar.Name); len(problems) == 0 {
				t.Error("accepted")
			} else {
				t.Log(strings.Join(problems, "; "))
			}
		})
	}
}

// skipContainers is the workload identity webhook's annotation naming the
// containers of a labelled pod it leaves alone, separated by ";".
const skipContainers = "azure.workload.identity/skip-containers"

// TestWorkloadIdentityReachesOnlyTheSidecar: in a pod labelled for Azure
// Workload Identity, the webhook's skip-containers annotation names exactly
// every container but the sidecar, so only the sidecar gets the federated
// token and the AZURE_* variables; the application would otherwise ask
// Entra ID for tokens itself, past the sidecar.
func TestWorkloadIdentityReachesOnlyTheSidecar(t *testing.T) {
	d, sidecar := sidecarOf(t, load(t))
	tmpl := d.Spec.Template
	if tmpl.Labels["azure.workload.identity/use"] != "true" {
		t.Fatal("the pod is not labelled azure.workload.identity/use: the workload identity config would get no credential")
	}
	var want []string
	for _, c := range append(slices.Clone(tmpl.Spec.InitContainers), tmpl.Spec.Containers...) {
		if c.Name != sidecar.Name {
			want = append(want, c.Name)
		}
	}
	annotation, ok := tmpl.Annotations[skipContainers]
	if !ok {
		t.Fatalf("no %s annotation: the webhook gives every container (%s) the workload identity", skipContainers, strings.Join(want, ", "))
	}
	var got []string
	for name := range strings.SplitSeq(annotation, ";") {
		if name = strings.TrimSpace(name); name != "" {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want every container but the sidecar: %q", skipContainers, annotation, strings.Join(want, ";"))
	}
}
