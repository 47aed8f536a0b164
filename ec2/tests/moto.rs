//! The client against moto's EC2 (`palisade_testkit::moto::Moto`, each test its own server):
//! the rotation's calls end to end, and moto's error answers as typed errors. moto does not
//! check signatures; `sigv4_vectors.rs` does that part.

use std::collections::BTreeMap;

use palisade_ec2::{
    AddressFilter, AssociationTarget, Credentials, Ec2Client, Ec2Config, Error, Zeroizing,
};
use palisade_testkit::moto::Moto;

const REGION: &str = "eu-west-1";

fn credentials() -> Credentials {
    Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        Zeroizing::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string()),
        None,
    )
    .unwrap()
}

fn client(moto: &Moto, region: &str) -> Ec2Client {
    let config = Ec2Config::new(region).with_endpoint(moto.endpoint().parse().unwrap());
    Ec2Client::new(config, credentials()).unwrap()
}

#[tokio::test]
async fn allocate_associate_reassociate_disassociate_release() {
    let moto = Moto::start().unwrap();
    let ec2 = client(&moto, REGION);
    assert_eq!(
        ec2.describe_addresses(&AddressFilter::All).await.unwrap(),
        vec![],
        "a fresh moto has no addresses"
    );

    // Allocate, tagged.
    let tags: BTreeMap<String, String> = [
        ("palisade:bastion".to_string(), "bastion-1".to_string()),
        ("Name".to_string(), "palisade bastion-1".to_string()),
    ]
    .into_iter()
    .collect();
    let first = ec2.allocate_address(&tags).await.unwrap();
    assert!(first.allocation_id.starts_with("eipalloc-"), "{first:?}");
    let described = ec2
        .describe_addresses(&AddressFilter::AllocationIds(vec![
            first.allocation_id.clone(),
        ]))
        .await
        .unwrap();
    assert_eq!(described.len(), 1);
    let address = &described[0];
    assert_eq!(
        (&address.allocation_id, address.public_ip),
        (&first.allocation_id, first.public_ip)
    );
    assert_eq!(address.tags, tags);
    assert_eq!(
        (&address.association_id, &address.instance_id),
        (&None, &None)
    );
    let tagged = ec2
        .describe_addresses(&AddressFilter::Tag {
            key: "palisade:bastion".to_string(),
            value: "bastion-1".to_string(),
        })
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].allocation_id, first.allocation_id);
    let untagged = ec2
        .describe_addresses(&AddressFilter::Tag {
            key: "palisade:bastion".to_string(),
            value: "bastion-2".to_string(),
        })
        .await
        .unwrap();
    assert_eq!(untagged, vec![]);

    // Associate with an instance.
    let palisade_testkit::moto::MotoInstance {
        instance_id: instance,
        network_interface_id: interface,
    } = palisade_testkit::moto::run_instance(&moto.endpoint(), REGION).await;
    let association = ec2
        .associate_address(
            &first.allocation_id,
            &AssociationTarget::Instance(instance.clone()),
        )
        .await
        .unwrap();
    assert!(association.starts_with("eipassoc-"), "{association}");
    let address = ec2
        .describe_addresses(&AddressFilter::AllocationIds(vec![
            first.allocation_id.clone(),
        ]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        address.association_id.as_deref(),
        Some(association.as_str())
    );
    assert_eq!(address.instance_id.as_deref(), Some(instance.as_str()));
    assert_eq!(
        address.network_interface_id.as_deref(),
        Some(interface.as_str())
    );
    assert!(address.private_ip.is_some(), "{address:?}");

    // A second address onto the same instance (AllowReassociation), as a rotation does.
    let second = ec2.allocate_address(&BTreeMap::new()).await.unwrap();
    assert_ne!(second.public_ip, first.public_ip);
    let second_association = ec2
        .associate_address(
            &second.allocation_id,
            &AssociationTarget::Instance(instance.clone()),
        )
        .await
        .unwrap();
    let both = ec2.describe_addresses(&AddressFilter::All).await.unwrap();
    assert_eq!(both.len(), 2);
    let second_now = both
        .iter()
        .find(|a| a.allocation_id == second.allocation_id)
        .unwrap();
    assert_eq!(
        second_now.association_id.as_deref(),
        Some(second_association.as_str())
    );
    assert_eq!(second_now.instance_id.as_deref(), Some(instance.as_str()));
    assert!(second_now.tags.is_empty());

    // The first address moves to the network interface: reassociation is allowed.
    let moved = ec2
        .associate_address(
            &first.allocation_id,
            &AssociationTarget::NetworkInterface(interface.clone()),
        )
        .await
        .unwrap();
    assert_ne!(moved, association);

    // Disassociate; the old association id is gone.
    ec2.disassociate_address(&moved).await.unwrap();
    let address = ec2
        .describe_addresses(&AddressFilter::AllocationIds(vec![
            first.allocation_id.clone(),
        ]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (&address.association_id, &address.instance_id),
        (&None, &None),
        "{address:?}"
    );
    let error = ec2.disassociate_address(&moved).await.unwrap_err();
    let Error::AssociationNotFound {
        association_id,
        aws,
        ..
    } = &error
    else {
        panic!("not AssociationNotFound: {error:?}");
    };
    assert_eq!(association_id, &moved);
    assert_eq!(aws.code, "InvalidAssociationID.NotFound");

    // Release; describing it now is InvalidAllocationID.NotFound.
    ec2.release_address(&first.allocation_id).await.unwrap();
    let error = ec2
        .describe_addresses(&AddressFilter::AllocationIds(vec![
            first.allocation_id.clone(),
        ]))
        .await
        .unwrap_err();
    let Error::AllocationNotFound {
        allocation_id, aws, ..
    } = &error
    else {
        panic!("not AllocationNotFound: {error:?}");
    };
    assert_eq!(allocation_id, &first.allocation_id);
    assert_eq!(
        (aws.code.as_str(), aws.status),
        ("InvalidAllocationID.NotFound", 400)
    );
    let message = error.to_string();
    assert!(
        message.contains(&first.allocation_id) && message.contains(REGION),
        "{message}"
    );
    let left = ec2.describe_addresses(&AddressFilter::All).await.unwrap();
    assert_eq!(
        left.iter().map(|a| &a.allocation_id).collect::<Vec<_>>(),
        [&second.allocation_id]
    );
}

#[tokio::test]
async fn moto_errors_are_typed_and_name_what_was_asked() {
    let moto = Moto::start().unwrap();
    let ec2 = client(&moto, REGION);

    let unknown = "eipalloc-00000000000000000";
    let error = ec2.release_address(unknown).await.unwrap_err();
    assert!(
        matches!(&error, Error::AllocationNotFound { allocation_id, .. } if allocation_id == unknown),
        "{error:?}"
    );
    let message = error.to_string();
    for part in [
        "EC2 ReleaseAddress of eipalloc-00000000000000000 in eu-west-1",
        "no Elastic IP allocation eipalloc-00000000000000000",
        "InvalidAllocationID.NotFound",
        "request id",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }

    let allocated = ec2.allocate_address(&BTreeMap::new()).await.unwrap();
    let error = ec2
        .associate_address(
            &allocated.allocation_id,
            &AssociationTarget::Instance("i-00000000000000000".to_string()),
        )
        .await
        .unwrap_err();
    let Error::Aws { aws, .. } = &error else {
        panic!("not Aws: {error:?}");
    };
    assert_eq!(aws.code, "InvalidInstanceID.NotFound");
    assert!(
        error
            .to_string()
            .contains("to instance i-00000000000000000"),
        "{error}"
    );

    // Addresses are per region: the region of the signature's scope reaches moto.
    let elsewhere = client(&moto, "us-east-2");
    assert_eq!(
        elsewhere
            .describe_addresses(&AddressFilter::All)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        ec2.describe_addresses(&AddressFilter::All)
            .await
            .unwrap()
            .len(),
        1
    );
}
