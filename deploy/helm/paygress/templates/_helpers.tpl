{{/*
The chart's name, truncated to 63 characters (a DNS label).
*/}}
{{- define "paygress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name: the release name, plus the chart name unless the release name
already contains it. Truncated to 63 characters.
*/}}
{{- define "paygress.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "paygress.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "paygress.labels" -}}
helm.sh/chart: {{ include "paygress.chart" . }}
{{ include "paygress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paygress
{{- end }}

{{/*
Selector labels (immutable once deployed: never add to them).
*/}}
{{- define "paygress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paygress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The service account's name.
*/}}
{{- define "paygress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paygress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Deployment's name: the gateway in sidecar mode, Paygress itself in standalone mode.
*/}}
{{- define "paygress.workloadName" -}}
{{- if eq .Values.mode "sidecar" }}
{{- printf "%s-gateway" (include "paygress.fullname" . | trunc 55 | trimSuffix "-") }}
{{- else }}
{{- include "paygress.fullname" . }}
{{- end }}
{{- end }}

{{/*
The namespace Paygress creates tier pods in.
*/}}
{{- define "paygress.workloadNamespace" -}}
{{- default .Release.Namespace .Values.kubernetes.namespace }}
{{- end }}

{{/*
"true" when Paygress manages pods (config.tiers is set), else "".
*/}}
{{- define "paygress.podsEnabled" -}}
{{- if .Values.config.tiers }}true{{ end }}
{{- end }}

{{/*
The Paygress image reference; a digest wins over the tag.
*/}}
{{- define "paygress.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Secret holding the wallet mnemonic (required).
*/}}
{{- define "paygress.seedSecret" -}}
{{- required "seed.existingSecret is required: create a Secret with the wallet mnemonic (paygress mnemonic > mnemonic.txt; kubectl create secret generic paygress-seed --from-file=mnemonic=mnemonic.txt) and set seed.existingSecret=paygress-seed" .Values.seed.existingSecret }}
{{- end }}

{{/*
Fixed paths inside the container (the image's contract, see the Dockerfile).
*/}}
{{- define "paygress.socketDir" -}}/run/paygress{{- end }}
{{- define "paygress.socketPath" -}}/run/paygress/paygress.sock{{- end }}
{{- define "paygress.stateDir" -}}/var/lib/paygress{{- end }}
{{- define "paygress.configDir" -}}/etc/paygress{{- end }}
{{- define "paygress.seedDir" -}}/var/run/secrets/paygress{{- end }}

{{/*
Paygress's config.yaml: the user's `config` plus the keys the chart owns (listeners, state
directory, metrics, dry run, and the kubernetes block when tiers are set).
*/}}
{{- define "paygress.config" -}}
{{- $config := omit (deepCopy (.Values.config | default dict)) "tiers" "listen" "state_dir" "metrics" "dry_run" "kubernetes" -}}
{{- $listen := dict "socket" (include "paygress.socketPath" .) "socket_mode" "0660" "tcp" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) -}}
{{- if .Values.forwardAuth.enabled }}
{{- $_ := set $listen "http" (printf "0.0.0.0:%d" (int .Values.ports.http)) -}}
{{- end }}
{{- $_ := set $config "listen" $listen -}}
{{- $_ := set $config "state_dir" (include "paygress.stateDir" .) -}}
{{- $_ := set $config "dry_run" .Values.dryRun -}}
{{- if .Values.metrics.enabled }}
{{- $_ := set $config "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics))) -}}
{{- end }}
{{- if .Values.config.tiers }}
{{- $kube := dict "namespace" (include "paygress.workloadNamespace" .) -}}
{{- with .Values.kubernetes }}
{{- if .kubeconfig }}{{ $_ := set $kube "kubeconfig" .kubeconfig }}{{ end }}
{{- if not (kindIs "invalid" .reaperIntervalSeconds) }}{{ $_ := set $kube "reaper_interval_seconds" .reaperIntervalSeconds }}{{ end }}
{{- if not (kindIs "invalid" .graceSeconds) }}{{ $_ := set $kube "grace_seconds" (int .graceSeconds) }}{{ end }}
{{- if .statusPath }}{{ $_ := set $kube "status_path" .statusPath }}{{ end }}
{{- if .offersPath }}{{ $_ := set $kube "offers_path" .offersPath }}{{ end }}
{{- end }}
{{- $_ := set $config "kubernetes" $kube -}}
{{- $_ := set $config "tiers" .Values.config.tiers -}}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The Paygress container. Called with (dict "root" $ "sidecar" bool): as a native sidecar
(an initContainer with restartPolicy: Always) of the gateway, or as the pod's main container.
*/}}
{{- define "paygress.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
name: paygress
image: {{ include "paygress.image" $root | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if .sidecar }}
restartPolicy: Always
{{- end }}
args:
  - serve
  - --config
  - {{ include "paygress.configDir" $root }}/config.yaml
env:
  - name: PAYGRESS_MNEMONIC_FILE
    value: {{ include "paygress.seedDir" $root }}/mnemonic
  - name: PAYGRESS_STATE_DIR
    value: {{ include "paygress.stateDir" $root }}
  - name: PAYGRESS_SOCKET
    value: {{ include "paygress.socketPath" $root }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: grpc
    containerPort: {{ $v.ports.grpc }}
    protocol: TCP
  {{- if $v.forwardAuth.enabled }}
  - name: http
    containerPort: {{ $v.ports.http }}
    protocol: TCP
  {{- end }}
  {{- if $v.metrics.enabled }}
  - name: metrics
    containerPort: {{ $v.ports.metrics }}
    protocol: TCP
  {{- end }}
{{- with $v.probes.startup }}
{{- if .enabled }}
startupProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.liveness }}
{{- if .enabled }}
livenessProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.readiness }}
{{- if .enabled }}
readinessProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: {{ include "paygress.configDir" $root }}
    readOnly: true
  - name: seed
    mountPath: {{ include "paygress.seedDir" $root }}
    readOnly: true
  - name: state
    mountPath: {{ include "paygress.stateDir" $root }}
  - name: socket
    mountPath: {{ include "paygress.socketDir" $root }}
  - name: tmp
    mountPath: /tmp
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
