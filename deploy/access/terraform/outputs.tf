output "workload_identity_annotations" {
  description = "The iam.gke.io/gcp-service-account annotation of each Kubernetes service account."
  value       = { for name, sa in google_service_account.component : name => sa.email }
}
