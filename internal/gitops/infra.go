package gitops

import (
	"net/netip"

	"github.com/homelab-dev/homelab/internal/spec"
)

// workersOnly keeps a workload off the control planes.
var workersOnly = M{"nodeAffinity": M{"requiredDuringSchedulingIgnoredDuringExecution": M{
	"nodeSelectorTerms": []M{{"matchExpressions": []M{{
		"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist",
	}}}},
}}}

// ingressNginx is two controllers from one chart: the public one behind
// the lab's load balancer (PROXY protocol v2 from the apps network, on
// the workers' NodePorts the LB forwards to) and the admin one for the
// dashboards, on the workers' ports 80 and 443, which the LB never
// forwards to and which accepts only the admin network and the VPN.
func ingressNginx(appsCIDR netip.Prefix, adminSources string) []M {
	const ns = "ingress-nginx"
	public := M{"controller": M{
		"kind":                    "DaemonSet",
		"affinity":                workersOnly,
		"ingressClass":            PublicIngressClass,
		"ingressClassResource":    M{"name": PublicIngressClass, "default": true, "controllerValue": "k8s.io/ingress-nginx"},
		"electionID":              "ingress-nginx-leader",
		"allowSnippetAnnotations": false,
		"config": M{
			"use-proxy-protocol":    "true",
			"proxy-real-ip-cidr":    appsCIDR.Masked().String(),
			"use-forwarded-headers": "false",
			"enable-real-ip":        "true",
		},
		"service": M{
			"type":                  "NodePort",
			"externalTrafficPolicy": "Local",
			"nodePorts":             M{"http": PublicHTTPNodePort, "https": PublicHTTPSNodePort},
		},
		// Metrics served; ServiceMonitors are left off so that this
		// release does not wait for the Prometheus CRDs.
		"metrics": M{"enabled": true},
	}}
	admin := M{"controller": M{
		"kind":                    "DaemonSet",
		"affinity":                workersOnly,
		"ingressClass":            AdminIngressClass,
		"ingressClassResource":    M{"name": AdminIngressClass, "default": false, "controllerValue": "k8s.io/ingress-nginx-admin"},
		"electionID":              "ingress-nginx-admin-leader",
		"allowSnippetAnnotations": false,
		"config": M{
			// Every dashboard behind this controller: admin network and VPN only.
			"whitelist-source-range": adminSources,
		},
		// Ports 80 and 443 of the workers, which the lab's firewall opens
		// to VPN peers on the admin network (firewall.AdminPorts) and which
		// the load balancer never reaches; a host port keeps the client
		// address for the allowlist.
		"hostPort": M{"enabled": true, "ports": M{"http": AdminHTTPPort, "https": AdminHTTPSPort}},
		"service":  M{"type": "ClusterIP"},
		// The public controller's webhook validates both classes.
		"admissionWebhooks": M{"enabled": false},
	}}
	return []M{
		namespace(ns, true), // host ports are beyond the baseline Pod Security Standard
		helmRepository("ingress-nginx", ns, "https://kubernetes.github.io/ingress-nginx"),
		helmRelease("ingress-nginx", ns, "ingress-nginx", IngressNginxChart, repoRef("ingress-nginx"), public),
		helmRelease("ingress-nginx-admin", ns, "ingress-nginx", IngressNginxChart, repoRef("ingress-nginx"), admin),
	}
}

func certManager() []M {
	const ns = "cert-manager"
	return []M{
		namespace(ns, false),
		helmRepository("jetstack", ns, "https://charts.jetstack.io"),
		helmRelease("cert-manager", ns, "cert-manager", CertManagerChart, repoRef("jetstack"), M{
			"crds":       M{"enabled": true},
			"prometheus": M{"enabled": true},
		}),
	}
}

// localPath is the default storage class: volumes in /var on the node
// (Talos keeps /var across reboots and upgrades).
func localPath() []M {
	const ns = "local-path-storage"
	return []M{
		namespace(ns, true),
		obj("source.toolkit.fluxcd.io/v1", "GitRepository", "local-path-provisioner", ns, M{
			"interval": "12h",
			"url":      "https://github.com/rancher/local-path-provisioner",
			"ref":      M{"tag": LocalPathVersion},
			"ignore":   "/*\n!/deploy/chart/\n",
		}),
		helmRelease("local-path-provisioner", ns, "./deploy/chart/local-path-provisioner", "",
			M{"kind": "GitRepository", "name": "local-path-provisioner"}, M{
				"storageClass": M{"create": true, "name": DefaultStorageClass, "defaultClass": true, "reclaimPolicy": "Delete"},
				"nodePathMap":  []M{{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": []string{"/var/local-path-provisioner"}}},
			}),
	}
}

func adminIngressAnnotations(adminSources string) M {
	return M{"nginx.ingress.kubernetes.io/whitelist-source-range": adminSources}
}

// monitoring is Prometheus, Alertmanager and Grafana; Grafana's admin
// password comes from the grafana-admin secret of the state folder.
func monitoring(lab *spec.Lab, adminSources string) []M {
	const ns = "monitoring"
	host := "grafana." + lab.Name + ".home.arpa"
	return []M{
		namespace(ns, true), // node-exporter uses the host's network and PID namespaces
		helmRepository("prometheus-community", ns, "https://prometheus-community.github.io/helm-charts"),
		helmRelease("kube-prometheus-stack", ns, "kube-prometheus-stack", KubePrometheusChart, repoRef("prometheus-community"), M{
			"crds": M{"enabled": true},
			"grafana": M{
				"admin": M{"existingSecret": "grafana-admin", "userKey": "admin-user", "passwordKey": "admin-password"},
				"ingress": M{
					"enabled":          true,
					"ingressClassName": AdminIngressClass,
					"annotations":      adminIngressAnnotations(adminSources),
					"hosts":            []string{host},
				},
				"persistence": M{"enabled": true, "storageClassName": DefaultStorageClass, "size": "2Gi"},
			},
			"prometheus": M{"prometheusSpec": M{
				"retention": "7d",
				"serviceMonitorSelectorNilUsesHelmValues": false,
				"podMonitorSelectorNilUsesHelmValues":     false,
				"storageSpec": M{"volumeClaimTemplate": M{"spec": M{
					"storageClassName": DefaultStorageClass,
					"accessModes":      []string{"ReadWriteOnce"},
					"resources":        M{"requests": M{"storage": "10Gi"}},
				}}},
			}},
			// Talos runs etcd, the scheduler and the controller manager
			// bound to localhost; scraping them needs extra Talos config.
			"kubeEtcd":              M{"enabled": false},
			"kubeScheduler":         M{"enabled": false},
			"kubeControllerManager": M{"enabled": false},
			"kubeProxy":             M{"enabled": false},
		}),
	}
}

// logging is VictoriaLogs with its Vector collector on every node.
func logging(lab *spec.Lab, adminSources string) []M {
	const ns = "logging"
	host := "logs." + lab.Name + ".home.arpa"
	return []M{
		namespace(ns, true), // the collector reads the nodes' log files
		helmRepository("victoriametrics", ns, "https://victoriametrics.github.io/helm-charts/"),
		helmRelease("victoria-logs", ns, "victoria-logs-single", VictoriaLogsChart, repoRef("victoriametrics"), M{
			"server": M{
				"retentionPeriod":  "14d",
				"persistentVolume": M{"enabled": true, "storageClassName": DefaultStorageClass, "size": "10Gi"},
				"ingress": M{
					"enabled":          true,
					"ingressClassName": AdminIngressClass,
					"annotations":      adminIngressAnnotations(adminSources),
					"hosts":            []M{{"name": host, "path": []string{"/"}, "port": "http"}},
				},
			},
			"vector": M{"enabled": true},
		}),
	}
}
