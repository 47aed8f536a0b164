//! The Elastic IP types the calls take and return.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// An Elastic IP address as DescribeAddresses shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// `eipalloc-…`: the address's handle for Associate and Release.
    pub allocation_id: String,
    /// The public address.
    pub public_ip: Ipv4Addr,
    /// `eipassoc-…` while associated (the handle for Disassociate).
    pub association_id: Option<String>,
    /// The instance it is associated with, if any.
    pub instance_id: Option<String>,
    /// The network interface it is associated with, if any (also set for an instance's).
    pub network_interface_id: Option<String>,
    /// The private address it maps to, while associated.
    pub private_ip: Option<Ipv4Addr>,
    /// The address's tags.
    pub tags: BTreeMap<String, String>,
}

/// A newly allocated address (AllocateAddress's answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatedAddress {
    /// `eipalloc-…`.
    pub allocation_id: String,
    /// The public address.
    pub public_ip: Ipv4Addr,
}

/// Which addresses DescribeAddresses returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressFilter {
    /// Every address of the account in the region.
    All,
    /// These allocations; AWS answers `InvalidAllocationID.NotFound` if one does not exist.
    AllocationIds(Vec<String>),
    /// Those whose tag `key` has the value `value`.
    Tag {
        /// The tag key.
        key: String,
        /// The tag value.
        value: String,
    },
}

/// Where AssociateAddress puts an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssociationTarget {
    /// An instance (`i-…`): its primary network interface's primary private address.
    Instance(String),
    /// A network interface (`eni-…`): its primary private address.
    NetworkInterface(String),
}
