{{/* The image reference: by digest when one is given (what security policies should pin). */}}
{{- define "conclave.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "conclave.labels" -}}
app.kubernetes.io/name: conclave
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "vault" "party" "contoso"). */}}
{{- define "conclave.selector" -}}
app.kubernetes.io/name: conclave
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .party }}
conclave.dev/party: {{ .party }}
{{- end }}
{{- end -}}

{{- define "conclave.attestName" -}}{{ .Release.Name }}-attest{{- end -}}
{{- define "conclave.vaultName" -}}{{ .root.Release.Name }}-{{ .party }}-vault{{- end -}}
{{- define "conclave.workloadName" -}}{{ .root.Release.Name }}-{{ .party }}-workload{{- end -}}

{{/* The issuer URL vaults trust and workloads attest at. */}}
{{- define "conclave.authority" -}}
{{- if .Values.attestation.authority -}}
{{ .Values.attestation.authority }}
{{- else if .Values.attestation.enabled -}}
https://{{ include "conclave.attestName" . }}.{{ .Release.Namespace }}.svc:8443
{{- else -}}
{{ fail "attestation.authority is required when attestation.enabled is false (e.g. https://sharedeus.eus.attest.azure.net)" }}
{{- end -}}
{{- end -}}

{{/* A party's vault URL: its own (vaultUrl, a vault its owner runs elsewhere), or this
release's. (dict "root" $ "party" id "vaultUrl" url) */}}
{{- define "conclave.vaultUrl" -}}
{{- if .vaultUrl -}}
{{ .vaultUrl }}
{{- else -}}
https://{{ include "conclave.vaultName" . }}.{{ .root.Release.Namespace }}.svc:8443
{{- end -}}
{{- end -}}

{{/* A party's id, checked: it names Services, keys and files. */}}
{{- define "conclave.partyId" -}}
{{- if not (regexMatch "^[a-z][a-z0-9]{0,19}$" (toString .id)) -}}
{{ fail (printf "party id %q must be 1-20 lowercase letters and digits, starting with a letter" (toString .id)) }}
{{- end -}}
{{ .id }}
{{- end -}}

{{/* The pod security context every Conclave container runs with. */}}
{{- define "conclave.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "conclave.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* A cert-manager Certificate for a service, unless a Secret is given. */}}
{{- define "conclave.certificate" -}}
{{- if not .secret }}
{{- if not .root.Values.certManager.issuer }}
{{ fail (printf "%s needs a TLS Secret, or certManager.issuer to issue one" .name) }}
{{- end }}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ .name }}-tls
  labels:
    {{- include "conclave.labels" .root | nindent 4 }}
spec:
  secretName: {{ .name }}-tls
  dnsNames:
    - {{ .name }}
    - {{ .name }}.{{ .root.Release.Namespace }}.svc
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    name: {{ .root.Values.certManager.issuer.name }}
    kind: {{ .root.Values.certManager.issuer.kind | default "Issuer" }}
{{- end }}
{{- end -}}
