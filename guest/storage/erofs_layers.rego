# dm-verity pinning for kata's erofs.multi-layer storages (X-kata.dmverity.* options).
#
# Load next to genpolicy's rules.rego (same package). genpolicy's rules have no clause for the
# erofs.multi-layer driver; allow_storage can accept one by calling
#     allow_erofs_layer_storage(p_container, i_storage)
# which holds only when the storage enables dm-verity and its verity options, with kata's
# defaults filled in, equal one layer pinned in policy_data.containers[_].erofs_layers, e.g.
#     "erofs_layers": [{"roothash": "<hex>", "salt": "<hex>", "hashoffset": "8192",
#                       "blocksize": "4096", "hashsize": "4096", "algorithm": "sha256",
#                       "hashtype": "1", "no-superblock": "true"}]
# Values are compared as the option strings. A repeated option with two values makes the option
# object conflict, which is an evaluation error and so a denial. The storage's source must be the
# canonical path of a virtio-blk/SCSI disk or loop device (erofs_source_pattern, the same text as
# guest/storage/source.py SOURCE_PATTERN) or the Kata PCI path of a hotplugged disk
# (erofs_pci_source_pattern, guest/storage/pci.py PCI_PATH_PATTERN): a source with spaces,
# newlines, "..", NULs or anything else is denied here, before the agent resolves it to a device
# number itself.
package agent_policy

import future.keywords.every
import future.keywords.if
import future.keywords.in

erofs_dmverity_prefix := "X-kata.dmverity."

erofs_source_pattern := `^/dev/((vd|sd)[a-z]{1,2}([1-9][0-9]?)?|loop(0|[1-9][0-9]{0,2}))$`

erofs_pci_source_pattern := `^[0-9a-f]{2}(/[0-9a-f]{2}){1,3}$`

erofs_source_allowed(source) if regex.match(erofs_source_pattern, source)

erofs_source_allowed(source) if regex.match(erofs_pci_source_pattern, source)

erofs_dmverity_keys := {"roothash", "salt", "hashoffset", "blocksize", "hashsize", "algorithm", "hashtype",
	"no-superblock"}

erofs_dmverity_defaults := {
	"salt": "",
	"blocksize": "4096",
	"hashsize": "4096",
	"algorithm": "sha256",
	"hashtype": "1",
	"no-superblock": "false",
}

erofs_dmverity_params(options) := object.union(erofs_dmverity_defaults, explicit) if {
	explicit := {k: v |
		some opt in options
		startswith(opt, erofs_dmverity_prefix)
		kv := split(substring(opt, count(erofs_dmverity_prefix), -1), "=")
		count(kv) == 2
		k := kv[0]
		v := kv[1]
	}
}

erofs_option_allowed(opt) if opt == "X-kata.dmverity-enabled=true"

erofs_option_allowed(opt) if {
	startswith(opt, erofs_dmverity_prefix)
	kv := split(substring(opt, count(erofs_dmverity_prefix), -1), "=")
	count(kv) == 2
	kv[0] in erofs_dmverity_keys
}

erofs_option_allowed(opt) if {
	startswith(opt, "X-kata.")
	not startswith(opt, "X-kata.dmverity")
}

erofs_option_allowed(opt) if opt == "ro"

allow_erofs_layer_storage(p_container, i_storage) if {
	i_storage.driver == "erofs.multi-layer"
	is_string(i_storage.source)
	erofs_source_allowed(i_storage.source)
	"X-kata.dmverity-enabled=true" in i_storage.options
	every opt in i_storage.options {
		erofs_option_allowed(opt)
	}
	params := erofs_dmverity_params(i_storage.options)
	some layer in p_container.erofs_layers
	params == object.union(erofs_dmverity_defaults, layer)
}

# The whole stack, for the rules patch the policy generator applies (genpolicy/rules.py):
# CreateContainerRequest also requires allow_erofs_layers(p_container, i_storages), which holds only
# when the request's erofs.multi-layer storages are exactly the pinned layers, in order (a missing
# layer would bring back what it deleted, a reordered one would shadow what it replaced).
erofs_layer_storages(i_storages) := [s | some s in i_storages; s.driver == "erofs.multi-layer"]

allow_erofs_layers(p_container, i_storages) if {
	count(object.get(p_container, "erofs_layers", [])) == 0
	count(erofs_layer_storages(i_storages)) == 0
}

allow_erofs_layers(p_container, i_storages) if {
	layers := p_container.erofs_layers
	storages := erofs_layer_storages(i_storages)
	count(layers) > 0
	count(storages) == count(layers)
	every i, s in storages {
		erofs_layer_matches(layers[i], s)
	}
	print("allow_erofs_layers: true")
}

erofs_layer_matches(layer, i_storage) if {
	is_string(i_storage.source)
	erofs_source_allowed(i_storage.source)
	"X-kata.dmverity-enabled=true" in i_storage.options
	every opt in i_storage.options {
		erofs_option_allowed(opt)
	}
	erofs_dmverity_params(i_storage.options) == object.union(erofs_dmverity_defaults, layer)
}
