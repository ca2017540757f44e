"""Analysis tests: every fail() of the rules, with the message it must give.

Each case is a target (tagged manual: it fails on purpose) and an analysistest that
expects its analysis to fail with a message naming the target's attribute.
"""

load("@bazel_skylib//lib:unittest.bzl", "analysistest", "asserts")
load("@rules_pkg//pkg:mappings.bzl", "pkg_attributes", "pkg_files")
load(
    "//rules:defs.bzl",
    "fs_image",
    "fstool_image",
    "gpt_disk",
    "iso_image",
    "mbr_disk",
    "partition",
    "raw_blob",
    "squashfs_image",
)

def _failure_test_impl(ctx):
    env = analysistest.begin(ctx)
    for needle in ctx.attr.expected:
        asserts.expect_failure(env, needle)
    return analysistest.end(env)

failure_test = analysistest.make(
    _failure_test_impl,
    expect_failure = True,
    attrs = {"expected": attr.string_list()},
)

def _make_dir_impl(ctx):
    d = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(outputs = [d], command = "mkdir -p $1", arguments = [d.path])
    return [DefaultInfo(files = depset([d]))]

make_dir = rule(implementation = _make_dir_impl)

def _case(name, rule, expected, **kwargs):
    rule(name = name + "_target", tags = ["manual"], **kwargs)
    failure_test(name = name, target_under_test = ":" + name + "_target", expected = expected, size = "small")
    return name

def failure_test_suite(name):
    """Declares one analysis test per fail() branch and a test_suite of them all.

    Args:
      name: the test_suite.
    """
    make_dir(name = "a_dir", tags = ["manual"])
    partition(name = "p_remaining", image = "a.txt", size = "remaining", tags = ["manual"])
    partition(name = "p_plain", image = "a.txt", tags = ["manual"])
    partition(name = "p_bootable", image = "a.txt", bootable = True, tags = ["manual"])
    partition(name = "p_attributes", image = "a.txt", attributes = ["required"], tags = ["manual"])
    partition(name = "p_uuid", image = "a.txt", uuid = "12345678-1234-1234-1234-123456789abc", tags = ["manual"])
    pkg_files(name = "pf_bad_mode", srcs = ["a.txt"], attributes = pkg_attributes(mode = "rw"), tags = ["manual"])
    pkg_files(name = "pf_user", srcs = ["a.txt"], attributes = pkg_attributes(user = "root"), tags = ["manual"])
    pkg_files(name = "pf_a", srcs = ["a.txt"], tags = ["manual"])
    fs_image(name = "fs_qcow2", fs_type = "vfat", format = "qcow2", tags = ["manual"])
    partition(name = "p_verity_data", image = "a.txt", verity = "data", tags = ["manual"])
    partition(name = "p_mbr_type", image = "a.txt", mbr_type = "0x0c", tags = ["manual"])
    raw_blob(name = "blob", src = "a.txt", offset = "32KiB", tags = ["manual"])

    tests = [
        # fs_image / squashfs_image
        _case("mode_not_octal", fs_image, ["attribute 'mode'", "0644", "u+x"], srcs = ["a.txt"], mode = "u+x"),
        _case("modes_not_octal", fs_image, ["attribute 'modes'", "/a.txt", "999"], srcs = ["a.txt"], modes = {"/a.txt": "999"}),
        _case("pkg_mode_not_octal", squashfs_image, ["attribute 'srcs'", "a.txt", "\"rw\""], srcs = [":pf_bad_mode"]),
        _case("pkg_user_without_uid", squashfs_image, ["attribute 'srcs'", "user = \"root\"", "has no numeric"], srcs = [":pf_user"]),
        _case("strip_prefix_outside", fs_image, ["attribute 'strip_prefix'", "is not below"], srcs = ["a.txt"], strip_prefix = "/elsewhere"),
        _case("two_srcs_one_path", fs_image, ["attribute 'srcs'", "both go to", "/a.txt"], srcs = ["a.txt", "sub/a.txt"]),
        _case("pkg_and_file_one_path", squashfs_image, ["attribute 'srcs'", "both go to /a.txt"], srcs = ["a.txt", ":pf_a"]),
        _case("symlink_empty_target", fs_image, ["attribute 'symlinks'", "/l", "has an empty target"], symlinks = {"/l": ""}),
        _case("owner_not_numeric", fs_image, ["attribute 'owners'", "/a.txt", "uid.gid"], srcs = ["a.txt"], owners = {"/a.txt": "root"}),
        _case("extra_option_with_attribute", fs_image, ["attribute 'extra_options'", "\"label\"", "has an attribute of its own"], extra_options = {"label": "x"}),
        _case("mtime_not_digits", fs_image, ["attribute 'mtime'", "digits", "\"yesterday\""], mtime = "yesterday"),
        _case("xattr_without_value", fs_image, ["attribute 'xattrs'", "/a.txt", "expected \"name=value\"", "\"user.x\""], xattrs = {"/a.txt": ["user.x"]}),
        _case("xattr_twice", squashfs_image, ["attribute 'xattrs'", "/a.txt", "user.x", "is given twice"], xattrs = {"/a.txt": ["user.x=1", "user.x=2"]}),
        _case("capability_empty", fs_image, ["attribute 'capabilities'", "/bin/ping", "the value is empty"], capabilities = {"/bin/ping": ""}),
        _case("acl_empty", fs_image, ["attribute 'acls'", "/srv", "the value is empty"], acls = {"/srv": ""}),
        # iso_image
        _case("boot_info_table_alone", iso_image, ["attribute 'boot_info_table'", "set bios_boot"], boot_info_table = True),
        _case("efi_boot_qcow2", iso_image, ["attribute 'efi_boot'", "fs_qcow2 is a qcow2 image", "El Torito needs the raw ESP"], efi_boot = ":fs_qcow2"),
        _case("efi_boot_two_files", iso_image, ["attribute 'efi_boot'", "gives 2 files", "the ESP image is exactly one"], efi_boot = ":two_files"),
        _case("hybrid_without_boot", iso_image, ["attribute 'hybrid'", "boots from bios_boot or efi_boot"], hybrid = True),
        _case("mbr_code_not_hybrid", iso_image, ["attribute 'mbr_code'", "it needs hybrid = True"], bios_boot = "/a.txt", srcs = ["a.txt"], mbr_code = "b.txt"),
        # partitions and disks
        _case("disk_without_partitions", gpt_disk, ["attribute 'partitions'", "at least one partition"], partitions = []),
        _case("remaining_not_last", gpt_disk, ["attribute 'partitions'", "only the last partition"], partitions = [":p_remaining", ":p_plain"], size = "1GiB"),
        _case("remaining_auto_disk", gpt_disk, ["attribute 'size'", "needs a fixed disk size"], partitions = [":p_remaining"]),
        _case("gpt_bootable", gpt_disk, ["attribute 'partitions'", "bootable is an MBR flag"], partitions = [":p_bootable"]),
        _case("mbr_attributes", mbr_disk, ["attribute 'partitions'", "attributes are GPT only"], partitions = [":p_attributes"]),
        _case("mbr_uuid", mbr_disk, ["attribute 'partitions'", "partition UUIDs are GPT only"], partitions = [":p_uuid"]),
        _case("only_blobs", gpt_disk, ["attribute 'partitions'", "at least one partition in its table"], partitions = [":blob"]),
        _case("disk_of_qcow2_fs", gpt_disk, ["attribute 'partitions'", "fs_qcow2 is a qcow2 image", "a disk places raw images"], partitions = [":fs_qcow2"]),
        _case("partition_of_qcow2_fs", partition, ["attribute 'image'", "a disk places raw images"], image = ":fs_qcow2"),
        _case("partition_two_files", partition, ["attribute 'image'", "gives 2 files", "an image is exactly one file"], image = ":two_files"),
        _case("partition_without_image", partition, ["attribute 'image'", "a partition needs an image"]),
        _case("hash_with_image", partition, ["attribute 'image'", "holds the hash tree only"], image = "a.txt", verity = "hash"),
        _case("verity_data_not_hash", partition, ["attribute 'verity_data'", "names the data partition"], image = "a.txt", verity = "data", verity_data = ":p_verity_data"),
        _case("verity_data_not_data", partition, ["attribute 'verity_data'", "p_plain", "is not a verity = \"data\" partition"], verity = "hash", verity_data = ":p_plain"),
        _case("mbr_type_not_hybrid", gpt_disk, ["attribute 'partitions'", "mbr_type mirrors a partition in a hybrid MBR"], partitions = [":p_mbr_type"]),
        _case("signature_not_hybrid", gpt_disk, ["attribute 'disk_signature'", "the disk signature is the MBR's"], partitions = [":p_plain"], disk_signature = "0x12345678"),
        # fstool_image
        _case("spec_src_directory", fstool_image, ["attribute 'srcs'", "is a directory"], spec = "spec.json", srcs = {":a_dir": "d"}),
        _case("spec_src_escapes", fstool_image, ["attribute 'srcs'", "must be a relative path"], spec = "spec.json", srcs = {"a.txt": "../a.txt"}),
        _case("spec_src_absolute", fstool_image, ["attribute 'srcs'", "must be a relative path"], spec = "spec.json", srcs = {"a.txt": "/a.txt"}),
        _case("spec_src_two_files", fstool_image, ["attribute 'srcs'", "gives 2 files", "files; each key must give exactly one"], spec = "spec.json", srcs = {":two_files": "x"}),
    ]
    native.filegroup(name = "two_files", srcs = ["a.txt", "b.txt"], tags = ["manual"])
    native.test_suite(name = name, tests = [":" + t for t in tests])
