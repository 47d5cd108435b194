"""The artifact and where it goes: the tar format, signatures, TVM RPC devices, the
emulated lab and microcontroller firmware under qemu. Light to import: the runtime reads
artifacts through ``edgec.deploy.artifact``."""
