{{/* Value combinations the schema cannot express; each message names the values to change. */}}
{{- define "jouletrace.validate" -}}
{{- if and (eq .Values.gpu.visibility "init-probe") (hasKey .Values.sidecar.config "devices") }}
{{- fail "sidecar.config.devices is filled in by gpu.visibility=init-probe; to list GPUs yourself set gpu.visibility=explicit" }}
{{- end }}
{{- if and (eq .Values.gpu.visibility "explicit") (not (hasKey .Values.sidecar.config "devices")) }}
{{- fail "gpu.visibility=explicit needs sidecar.config.devices (GPU UUIDs or indices, or \"all\" when the pod owns its node)" }}
{{- end }}
{{- if and (eq .Values.gpu.visibility "dra") (semverCompare "<1.31.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail "gpu.visibility=dra needs Kubernetes 1.31 or later (pod resourceClaims[].resourceClaimTemplateName); on this cluster use gpu.visibility=init-probe or explicit" }}
{{- end }}
{{- if and .Values.proxy.enabled (ne .Values.mode "vllm") (not .Values.sidecar.config.proxy_upstream) }}
{{- fail "proxy.enabled outside mode=vllm needs sidecar.config.proxy_upstream: the OpenAI server's URL as the proxy container sees it (e.g. http://localhost:8000)" }}
{{- end }}
{{- if and (hasKey .Values.sidecar.config "port") (eq (int .Values.sidecar.config.port) 0) }}
{{- fail "sidecar.config.port 0 (any free port) cannot be probed or scraped: the chart needs a fixed port (default 9464)" }}
{{- end }}
{{- if and .Values.proxy.enabled (hasKey .Values.sidecar.config "proxy_port") (eq (int .Values.sidecar.config.proxy_port) 0) }}
{{- fail "sidecar.config.proxy_port 0 (any free port) cannot be a Service's target: proxy.enabled needs a fixed port (default 8001)" }}
{{- end }}
{{- if and (eq .Values.mode "existing-pod") (empty .Values.existingPod.selector) }}
{{- fail "mode=existing-pod needs existingPod.selector: the labels of your inference pods" }}
{{- end }}
{{- end }}
