{{/* Names and labels. */}}
{{- define "jouletrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jouletrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "jouletrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jouletrace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jouletrace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jouletrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jouletrace
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the pods the Service selects: ours, or the existing inference pods. */}}
{{- define "jouletrace.podSelector" -}}
{{- if eq .Values.mode "existing-pod" }}
{{- toYaml .Values.existingPod.selector }}
{{- else }}
{{- include "jouletrace.selectorLabels" . }}
{{- end }}
{{- end }}

{{- define "jouletrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jouletrace.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jouletrace.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The inference container of the workload modes. */}}
{{- define "jouletrace.server" -}}
{{- if eq .Values.mode "vllm" }}{{ toYaml .Values.vllm }}{{ else }}{{ toYaml .Values.diffusion }}{{ end }}
{{- end }}

{{/* The sidecar's ports: its `port` and `otlp_port` knobs. */}}
{{- define "jouletrace.port" -}}
{{- .Values.sidecar.config.port | default 9464 | int }}
{{- end }}

{{- /* proxy.enabled: the proxy is the only tap (else vLLM's requests would be counted twice) */}}
{{- define "jouletrace.pluginPort" -}}
{{- if .Values.proxy.enabled }}0{{ else if hasKey .Values.sidecar.config "plugin_port" }}{{ .Values.sidecar.config.plugin_port | int }}{{ else }}9466{{ end }}
{{- end }}

{{- define "jouletrace.hookPort" -}}
{{- if hasKey .Values.sidecar.config "hook_port" }}{{ .Values.sidecar.config.hook_port | int }}{{ else }}9467{{ end }}
{{- end }}

{{- define "jouletrace.otlpPort" -}}
{{- if .Values.proxy.enabled }}0{{ else if hasKey .Values.sidecar.config "otlp_port" }}{{ .Values.sidecar.config.otlp_port | int }}{{ else }}4317{{ end }}
{{- end }}

{{- define "jouletrace.proxyPort" -}}
{{- if hasKey .Values.sidecar.config "proxy_port" }}{{ .Values.sidecar.config.proxy_port | int }}{{ else }}8001{{ end }}
{{- end }}

{{/*
A knob value as the sidecar parses it. Helm reads YAML numbers as float64, which would print
1000000 as "1e+06": whole numbers are printed as integers.
*/}}
{{- define "jouletrace.knobValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The sidecar's config knobs: sidecar.config, plus the defaults the chart fills in. */}}
{{- define "jouletrace.knobs" -}}
{{- $knobs := deepCopy .Values.sidecar.config }}
{{- if and (ne .Values.mode "existing-pod") (not (hasKey $knobs "model")) }}
{{- $_ := set $knobs "model" (fromYaml (include "jouletrace.server" .)).model }}
{{- end }}
{{- if eq .Values.gpu.visibility "dra" }}
{{- $_ := set $knobs "devices" "all" }}
{{- end }}
{{- /* vLLM mode: the /metrics tap scrapes vLLM on localhost unless told otherwise */}}
{{- if and (eq .Values.mode "vllm") (not (hasKey $knobs "vllm_metrics_url")) }}
{{- $_ := set $knobs "vllm_metrics_url" (printf "http://localhost:%d/metrics" (int .Values.vllm.port)) }}
{{- end }}
{{- if .Values.proxy.enabled }}
{{- if and (eq .Values.mode "vllm") (not (hasKey $knobs "proxy_upstream")) }}
{{- $_ := set $knobs "proxy_upstream" (printf "http://localhost:%d" (int .Values.vllm.port)) }}
{{- end }}
{{- if not (hasKey $knobs "proxy_host") }}{{ $_ := set $knobs "proxy_host" "0.0.0.0" }}{{ end }}
{{- $_ := set $knobs "otlp_port" (include "jouletrace.otlpPort" . | int) }}
{{- $_ := set $knobs "plugin_port" (include "jouletrace.pluginPort" . | int) }}
{{- end }}
{{- toYaml $knobs }}
{{- end }}

{{/* The sidecar container's knobs: all but proxy_upstream (the proxy runs in its own container). */}}
{{- define "jouletrace.sidecarKnobs" -}}
{{- $knobs := fromYaml (include "jouletrace.knobs" .) }}
{{- $_ := unset $knobs "proxy_upstream" }}
{{- toYaml $knobs }}
{{- end }}

{{/*
The proxy container's knobs: proxy_*, log_level and shutdown_grace_s, the sidecar's API on localhost for its prices
and record URLs, and the sidecar's UDP port for its per-request timings.
*/}}
{{- define "jouletrace.proxyKnobs" -}}
{{- $knobs := dict }}
{{- range $name, $value := (fromYaml (include "jouletrace.knobs" .)) }}
{{- if or (hasPrefix "proxy_" $name) (has $name (list "log_level" "shutdown_grace_s")) }}{{ $_ := set $knobs $name $value }}{{ end }}
{{- end }}
{{- if not (hasKey $knobs "proxy_sidecar_url") }}
{{- $_ := set $knobs "proxy_sidecar_url" (printf "http://127.0.0.1:%s" (include "jouletrace.port" .)) }}
{{- end }}
{{- $_ := unset $knobs "proxy_wire_host" }}
{{- toYaml $knobs }}
{{- end }}

{{/* The proxy: `jouletrace proxy`, a native sidecar started after the sidecar it feeds. */}}
{{- define "jouletrace.proxy" -}}
- name: jouletrace-proxy
  image: {{ include "jouletrace.image" (dict "image" .Values.sidecar.image "root" .) }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  restartPolicy: Always
  args: [proxy]
  env:
    {{- range $name, $value := (fromYaml (include "jouletrace.proxyKnobs" .)) }}
    - name: JOULETRACE_{{ upper $name }}
      value: {{ include "jouletrace.knobValue" $value | quote }}
    {{- end }}
  ports:
    - name: proxy
      containerPort: {{ include "jouletrace.proxyPort" . }}
      protocol: TCP
  startupProbe:
    tcpSocket: {port: proxy}
    periodSeconds: 2
    failureThreshold: 30
  readinessProbe:
    tcpSocket: {port: proxy}
    periodSeconds: 10
  livenessProbe:
    tcpSocket: {port: proxy}
    periodSeconds: 20
    failureThreshold: 3
  resources:
    {{- toYaml .Values.proxy.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
{{- end }}

{{/* Shared emptyDir where the GPU probe writes the pod's GPU UUIDs. */}}
{{- define "jouletrace.gpuFile" -}}/run/jouletrace/devices{{- end }}

{{/*
init-probe: a plain init container that requests the pod's GPUs, then exits. The kubelet's
device manager hands a finished init container's devices to the containers after it, so the
inference container receives these same GPUs. The device plugin passes them in
NVIDIA_VISIBLE_DEVICES (envvar strategy) or as files in /var/run/nvidia-container-devices
(volume-mounts strategy); both end up as a comma-separated list in the shared file.
*/}}
{{- define "jouletrace.gpuProbe" -}}
- name: jouletrace-gpus
  image: {{ include "jouletrace.image" (dict "image" .Values.sidecar.image "root" .) }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      set -eu
      devices="${NVIDIA_VISIBLE_DEVICES:-}"
      if [ "$devices" = /var/run/nvidia-container-devices ]; then
        devices="$(ls /var/run/nvidia-container-devices | paste -sd, -)"
      fi
      case "$devices" in
        ""|all|none|void)
          echo "jouletrace-gpus: the device plugin gave no GPU list (NVIDIA_VISIBLE_DEVICES='$devices')." >&2
          echo "Use gpu.visibility=dra or explicit (docs/deploy.md#gpu-visibility)." >&2
          exit 1 ;;
      esac
      printf '%s' "$devices" > {{ include "jouletrace.gpuFile" . }}
      echo "jouletrace-gpus: $devices"
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
      {{ .Values.gpu.resourceName }}: {{ .Values.gpu.count }}
    limits:
      cpu: 100m
      memory: 32Mi
      {{ .Values.gpu.resourceName }}: {{ .Values.gpu.count }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: jouletrace-run
      mountPath: /run/jouletrace
{{- end }}

{{/* The sidecar: a native sidecar (an init container with restartPolicy: Always). */}}
{{- define "jouletrace.sidecar" -}}
- name: jouletrace
  image: {{ include "jouletrace.image" (dict "image" .Values.sidecar.image "root" .) }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  restartPolicy: Always
  {{- if eq .Values.gpu.visibility "init-probe" }}
  command:
    - /bin/sh
    - -c
    - |
      JOULETRACE_DEVICES="$(cat {{ include "jouletrace.gpuFile" . }})"
      export JOULETRACE_DEVICES
      exec jouletrace sidecar
  {{- else }}
  args: [sidecar]
  {{- end }}
  env:
    {{- range $name, $value := (fromYaml (include "jouletrace.sidecarKnobs" .)) }}
    - name: JOULETRACE_{{ upper $name }}
      value: {{ include "jouletrace.knobValue" $value | quote }}
    {{- end }}
    {{- if ne .Values.gpu.visibility "dra" }}
    - name: NVIDIA_VISIBLE_DEVICES
      value: {{ .Values.gpu.sidecarVisibleDevices | quote }}
    {{- end }}
    # NVML needs only the driver's utility libraries.
    - name: NVIDIA_DRIVER_CAPABILITIES
      value: utility
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
    {{- with .Values.sidecar.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      containerPort: {{ include "jouletrace.port" . }}
      protocol: TCP
    {{- if ne (include "jouletrace.otlpPort" .) "0" }}
    - name: otlp-grpc
      containerPort: {{ include "jouletrace.otlpPort" . }}
      protocol: TCP
    {{- end }}
  livenessProbe:
    {{- toYaml .Values.sidecar.livenessProbe | nindent 4 }}
  readinessProbe:
    {{- toYaml .Values.sidecar.readinessProbe | nindent 4 }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
    {{- if eq .Values.gpu.visibility "dra" }}
    claims:
      - name: gpu
    {{- end }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: jouletrace-data
      mountPath: /var/lib/jouletrace
    - name: jouletrace-tmp
      mountPath: /tmp
    {{- if eq .Values.gpu.visibility "init-probe" }}
    - name: jouletrace-run
      mountPath: /run/jouletrace
      readOnly: true
    {{- end }}
{{- end }}

{{/* The init containers: the GPU probe (init-probe only), the sidecar, then the proxy (proxy.enabled). */}}
{{- define "jouletrace.initContainers" -}}
{{- if eq .Values.gpu.visibility "init-probe" }}
{{ include "jouletrace.gpuProbe" . }}
{{- end }}
{{ include "jouletrace.sidecar" . }}
{{- if .Values.proxy.enabled }}
{{ include "jouletrace.proxy" . }}
{{- end }}
{{- end }}

{{/* The sidecar's volumes (all emptyDir: the root filesystem is read-only). */}}
{{- define "jouletrace.volumes" -}}
- name: jouletrace-data
  emptyDir: {}
- name: jouletrace-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- if eq .Values.gpu.visibility "init-probe" }}
- name: jouletrace-run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end }}

{{/* Pod-level GPU claim (dra). */}}
{{- define "jouletrace.resourceClaims" -}}
{{- if eq .Values.gpu.visibility "dra" }}
resourceClaims:
  - name: gpu
    resourceClaimTemplateName: {{ required "gpu.dra.resourceClaimTemplateName is required with gpu.visibility=dra" .Values.gpu.dra.resourceClaimTemplateName }}
{{- end }}
{{- end }}
