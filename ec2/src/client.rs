//! [`Ec2Client`]: the five Elastic IP calls, each one Query API action whose parameters are
//! built here and whose answer `xml` reads. Transport, signing and retries are `transport`'s.

use std::collections::BTreeMap;
use std::fmt;

use reqwest::Url;

use crate::address::{Address, AddressFilter, AllocatedAddress, AssociationTarget};
use crate::config::Ec2Config;
use crate::credentials::Credentials;
use crate::error::{Call, Error};
use crate::transport::{Answer, Subjects, Transport};
use crate::xml;

/// An EC2 client for one region and one set of credentials. Cheap to clone (the connection
/// pool is shared).
#[derive(Clone)]
pub struct Ec2Client {
    transport: Transport,
}

impl fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Client")
            .field("endpoint", &self.transport.endpoint().as_str())
            .field("region", &self.transport.region())
            .finish_non_exhaustive()
    }
}

impl Ec2Client {
    /// A client for `config`'s endpoint and region, signing with `credentials`; an
    /// [`Error::Config`] if a setting cannot work. Nothing is sent yet.
    pub fn new(config: Ec2Config, credentials: Credentials) -> Result<Ec2Client, Error> {
        Ok(Ec2Client {
            transport: Transport::new(config, credentials)?,
        })
    }

    /// Where requests go.
    pub fn endpoint(&self) -> &Url {
        self.transport.endpoint()
    }

    /// The region.
    pub fn region(&self) -> &str {
        self.transport.region()
    }

    /// DescribeAddresses: the account's Elastic IPs in the region that `filter` selects.
    pub async fn describe_addresses(&self, filter: &AddressFilter) -> Result<Vec<Address>, Error> {
        let mut subjects = Subjects::default();
        let subject = match filter {
            AddressFilter::All => "(all addresses)".to_string(),
            AddressFilter::AllocationIds(ids) if ids.is_empty() => "(no allocation id)".to_string(),
            AddressFilter::AllocationIds(ids) => {
                let joined = ids.join(", ");
                subjects.allocation_id = Some(joined.clone());
                format!("of {joined}")
            }
            AddressFilter::Tag { key, value } => format!("tagged {key}={value}"),
        };
        let call = self.transport.call_for("DescribeAddresses", subject);
        let mut params = Vec::new();
        match filter {
            AddressFilter::All => {}
            AddressFilter::AllocationIds(ids) => {
                if ids.is_empty() {
                    return Err(invalid(
                        call,
                        "no allocation id given (AddressFilter::All lists every address)",
                    ));
                }
                for (index, id) in ids.iter().enumerate() {
                    require_id(&call, "an allocation id", id)?;
                    params.push((format!("AllocationId.{}", index + 1), id.clone()));
                }
            }
            AddressFilter::Tag { key, value } => {
                require_non_empty(&call, "the tag key", key)?;
                params.push(("Filter.1.Name".to_string(), format!("tag:{key}")));
                params.push(("Filter.1.Value.1".to_string(), value.clone()));
            }
        }
        let answer = self.transport.call(&call, &subjects, &params).await?;
        xml::addresses(&answer.body).map_err(|detail| unreadable(call, &answer, detail))
    }

    /// AllocateAddress: a new Elastic IP for use in a VPC, with `tags` (none if empty).
    pub async fn allocate_address(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<AllocatedAddress, Error> {
        let subject = if tags.is_empty() {
            String::new()
        } else {
            let listed: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("tagged {}", listed.join(", "))
        };
        let call = self.transport.call_for("AllocateAddress", subject);
        let mut params = vec![("Domain".to_string(), "vpc".to_string())];
        if !tags.is_empty() {
            params.push((
                "TagSpecification.1.ResourceType".to_string(),
                "elastic-ip".to_string(),
            ));
            for (index, (key, value)) in tags.iter().enumerate() {
                require_non_empty(&call, "a tag key", key)?;
                params.push((
                    format!("TagSpecification.1.Tag.{}.Key", index + 1),
                    key.clone(),
                ));
                params.push((
                    format!("TagSpecification.1.Tag.{}.Value", index + 1),
                    value.clone(),
                ));
            }
        }
        let answer = self
            .transport
            .call(&call, &Subjects::default(), &params)
            .await?;
        let allocated =
            xml::allocated(&answer.body).map_err(|detail| unreadable(call, &answer, detail))?;
        tracing::info!(
            region = self.region(),
            allocation_id = %allocated.allocation_id,
            public_ip = %allocated.public_ip,
            "allocated an Elastic IP"
        );
        Ok(allocated)
    }

    /// AssociateAddress with `AllowReassociation=true`: puts the address on `target` even if
    /// it is associated elsewhere now (and replaces the target's current public address);
    /// the new association id.
    pub async fn associate_address(
        &self,
        allocation_id: &str,
        target: &AssociationTarget,
    ) -> Result<String, Error> {
        let (target_param, target_id, target_kind) = match target {
            AssociationTarget::Instance(id) => ("InstanceId", id, "instance"),
            AssociationTarget::NetworkInterface(id) => {
                ("NetworkInterfaceId", id, "network interface")
            }
        };
        let call = self.transport.call_for(
            "AssociateAddress",
            format!("of {allocation_id} to {target_kind} {target_id}"),
        );
        require_id(&call, "the allocation id", allocation_id)?;
        require_id(&call, &format!("the {target_kind} id"), target_id)?;
        let params = [
            ("AllocationId".to_string(), allocation_id.to_string()),
            (target_param.to_string(), target_id.clone()),
            ("AllowReassociation".to_string(), "true".to_string()),
        ];
        let subjects = Subjects {
            allocation_id: Some(allocation_id.to_string()),
            association_id: None,
        };
        let answer = self.transport.call(&call, &subjects, &params).await?;
        let association_id = xml::association_id(&answer.body)
            .map_err(|detail| unreadable(call, &answer, detail))?;
        tracing::info!(
            region = self.region(),
            allocation_id,
            target = %format!("{target_kind} {target_id}"),
            association_id = %association_id,
            "associated an Elastic IP"
        );
        Ok(association_id)
    }

    /// DisassociateAddress: ends the association `association_id` (the address stays
    /// allocated).
    pub async fn disassociate_address(&self, association_id: &str) -> Result<(), Error> {
        let call = self.transport.call_for(
            "DisassociateAddress",
            format!("of association {association_id}"),
        );
        require_id(&call, "the association id", association_id)?;
        let params = [("AssociationId".to_string(), association_id.to_string())];
        let subjects = Subjects {
            allocation_id: None,
            association_id: Some(association_id.to_string()),
        };
        let answer = self.transport.call(&call, &subjects, &params).await?;
        xml::confirmation(&answer.body, "DisassociateAddressResponse")
            .map_err(|detail| unreadable(call, &answer, detail))?;
        tracing::info!(
            region = self.region(),
            association_id,
            "disassociated an Elastic IP"
        );
        Ok(())
    }

    /// ReleaseAddress: gives the address back to AWS (it cannot be had again). AWS refuses
    /// while it is associated (`InvalidIPAddress.InUse`).
    pub async fn release_address(&self, allocation_id: &str) -> Result<(), Error> {
        let call = self
            .transport
            .call_for("ReleaseAddress", format!("of {allocation_id}"));
        require_id(&call, "the allocation id", allocation_id)?;
        let params = [("AllocationId".to_string(), allocation_id.to_string())];
        let subjects = Subjects {
            allocation_id: Some(allocation_id.to_string()),
            association_id: None,
        };
        let answer = self.transport.call(&call, &subjects, &params).await?;
        xml::confirmation(&answer.body, "ReleaseAddressResponse")
            .map_err(|detail| unreadable(call, &answer, detail))?;
        tracing::info!(
            region = self.region(),
            allocation_id,
            "released an Elastic IP"
        );
        Ok(())
    }
}

fn invalid(call: Call, reason: &str) -> Error {
    Error::InvalidArgument {
        call,
        reason: reason.to_string(),
    }
}

/// A tag key may have spaces, but not be empty.
fn require_non_empty(call: &Call, what: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(invalid(call.clone(), &format!("{what} is empty")));
    }
    Ok(())
}

/// An id must be non-empty and have no whitespace or control characters.
fn require_id(call: &Call, what: &str, id: &str) -> Result<(), Error> {
    require_non_empty(call, what, id)?;
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            call.clone(),
            &format!("{what} {id:?} has whitespace or control characters"),
        ));
    }
    Ok(())
}

/// A 2xx answer whose content could not be read: the call took effect.
fn unreadable(call: Call, answer: &Answer, detail: String) -> Error {
    Error::UnexpectedAnswer {
        call,
        status: answer.status,
        detail,
    }
}
