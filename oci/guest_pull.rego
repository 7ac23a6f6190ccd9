# Image pinning for kata's image_guest_pull storages.
#
# genpolicy's rules.rego checks neither the image reference of a guest-pull storage nor the CRI
# image annotations, and accepts a CreateContainer without any guest-pull storage. oci.policy
# patches rules.rego so that CreateContainerRequest also requires
#     allow_guest_pull_image(p_container, i_oci, i_storages)
# which holds only when the digest pinned in the policy container's
# OCI.Annotations["io.kubernetes.cri.image-name"] (name[:tag]@digest) is the digest of
#   - the storage source (the reference the guest pulls),
#   - the request's io.kubernetes.cri.image-name annotation,
#   - the image name in the storage's driver option metadata,
# the storage targets the container's rootfs (Root.Path), there is exactly one such storage, and
# its metadata does not turn a workload into the sandbox container. A workload container without
# a guest-pull storage is denied (its rootfs would be whatever the host put there). Only the digest
# part is compared: containerd drops the tag when a digest is present. The pause container takes
# kata's built-in bundle (source "pause", or no storage); containers whose layers are pinned host
# EROFS layers (erofs_layers) take no guest pull.
package agent_policy

import future.keywords.every
import future.keywords.if
import future.keywords.in

# --- rules (oci.policy appends what follows to rules.rego) ---

guest_pull_digest_re := "^[^@]+@(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$"

guest_pull_digest(ref) := d if {
	d := regex.find_all_string_submatch_n(guest_pull_digest_re, ref, 1)[0][1]
}

guest_pull_storages(i_storages) := [s | some s in i_storages; s.driver == "image_guest_pull"]

guest_pull_metadata(s) := meta if {
	count(s.driver_options) == 1
	opt := s.driver_options[0]
	startswith(opt, "image_guest_pull=")
	doc := json.unmarshal(substring(opt, count("image_guest_pull="), -1))
	meta := doc.metadata
	is_object(meta)
}

guest_pull_type(annotations) := object.get(annotations, "io.kubernetes.cri.container-type",
	object.get(annotations, "io.kubernetes.cri-o.ContainerType", ""))

guest_pull_erofs(p_container) if count(object.get(p_container, "erofs_layers", [])) > 0

allow_guest_pull_image(p_container, i_oci, i_storages) if {
	guest_pull_erofs(p_container)
	count(guest_pull_storages(i_storages)) == 0
	print("allow_guest_pull_image: host EROFS layers, no guest pull: true")
}

allow_guest_pull_image(p_container, i_oci, i_storages) if {
	guest_pull_type(p_container.OCI.Annotations) == "sandbox"
	guest_pull_type(i_oci.Annotations) == "sandbox"
	count(guest_pull_storages(i_storages)) == 0
	print("allow_guest_pull_image: sandbox without guest pull: true")
}

allow_guest_pull_image(p_container, i_oci, i_storages) if {
	not guest_pull_erofs(p_container)
	guest_pull_type(p_container.OCI.Annotations) == "sandbox"
	guest_pull_type(i_oci.Annotations) == "sandbox"
	pulls := guest_pull_storages(i_storages)
	count(pulls) == 1
	pulls[0].source == "pause"
	guest_pull_type(guest_pull_metadata(pulls[0])) == "sandbox"
	pulls[0].mount_point == i_oci.Root.Path
	print("allow_guest_pull_image: sandbox pause bundle: true")
}

allow_guest_pull_image(p_container, i_oci, i_storages) if {
	not guest_pull_erofs(p_container)
	guest_pull_type(p_container.OCI.Annotations) != "sandbox"
	pinned := guest_pull_digest(p_container.OCI.Annotations["io.kubernetes.cri.image-name"])
	pulls := guest_pull_storages(i_storages)
	count(pulls) == 1
	s := pulls[0]
	meta := guest_pull_metadata(s)
	print("allow_guest_pull_image: pinned =", pinned, "source =", s.source)
	guest_pull_digest(s.source) == pinned
	guest_pull_digest(i_oci.Annotations["io.kubernetes.cri.image-name"]) == pinned
	guest_pull_digest(meta["io.kubernetes.cri.image-name"]) == pinned
	every key in ["io.kubernetes.cri-o.ImageName"] {
		guest_pull_digest(object.get(meta, key, s.source)) == pinned
	}
	guest_pull_type(meta) == guest_pull_type(i_oci.Annotations)
	guest_pull_type(meta) != "sandbox"
	s.mount_point == i_oci.Root.Path
	print("allow_guest_pull_image: true")
}
