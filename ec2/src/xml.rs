//! EC2's XML answers, read into types: pure, strict about what the calls need (a missing
//! allocation id or an address that is not IPv4 is an error, not a default), lenient about
//! what they do not (unknown elements, the namespace, empty optional elements as moto writes
//! them). Elements are matched by local name; the document may not have a DTD and is bounded
//! in nodes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use roxmltree::{Document, Node, ParsingOptions};

use crate::address::{Address, AllocatedAddress};

/// More nodes than any answer to these calls has (a few dozen per address).
const NODES_LIMIT: u32 = 200_000;

/// An error answer's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ErrorAnswer {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
}

fn parse(body: &str) -> Result<Document<'_>, String> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(body, options).map_err(|e| format!("not XML: {e}"))
}

/// The root element, checked to be `expected` (e.g. `DescribeAddressesResponse`).
fn root<'a, 'input>(
    document: &'a Document<'input>,
    expected: &str,
) -> Result<Node<'a, 'input>, String> {
    let root = document.root_element();
    let name = root.tag_name().name();
    if name == expected {
        Ok(root)
    } else {
        Err(format!("the root element is <{name}>, not <{expected}>"))
    }
}

/// The first child element named `name`.
fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == name)
}

/// The child elements named `name`.
fn children<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |child| child.is_element() && child.tag_name().name() == name)
}

/// The trimmed text of the child `name`; `None` if it is missing or empty.
fn text(node: Node<'_, '_>, name: &str) -> Option<String> {
    let element = child(node, name)?;
    let text: String = element
        .children()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn required(node: Node<'_, '_>, name: &str, within: &str) -> Result<String, String> {
    text(node, name).ok_or_else(|| format!("<{within}> has no <{name}>"))
}

fn ipv4(text: &str, what: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not an IPv4 address"))
}

/// The request id of a success answer (`<requestId>`), for the logs.
pub(crate) fn request_id(body: &str) -> Option<String> {
    let document = parse(body).ok()?;
    text(document.root_element(), "requestId")
}

/// An EC2 error answer: `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error>
/// </Errors><RequestID>…</RequestID></Response>` (the first error; EC2 sends one). Also the
/// `<ErrorResponse><Error>…` shape of AWS's query protocol. `None` if the body is neither.
pub(crate) fn error_answer(body: &str) -> Option<ErrorAnswer> {
    let document = parse(body).ok()?;
    let root = document.root_element();
    let error = match root.tag_name().name() {
        "Response" => child(child(root, "Errors")?, "Error")?,
        "ErrorResponse" => child(root, "Error")?,
        _ => return None,
    };
    Some(ErrorAnswer {
        code: text(error, "Code")?,
        message: text(error, "Message").unwrap_or_default(),
        request_id: text(root, "RequestID").or_else(|| text(root, "RequestId")),
    })
}

/// DescribeAddresses's `addressesSet`.
pub(crate) fn addresses(body: &str) -> Result<Vec<Address>, String> {
    let document = parse(body)?;
    let root = root(&document, "DescribeAddressesResponse")?;
    let Some(set) = child(root, "addressesSet") else {
        return Err("<DescribeAddressesResponse> has no <addressesSet>".to_string());
    };
    children(set, "item").map(address).collect()
}

fn address(item: Node<'_, '_>) -> Result<Address, String> {
    let within = "addressesSet/item";
    let allocation_id = required(item, "allocationId", within)?;
    let public_ip = ipv4(
        &required(item, "publicIp", within)?,
        &format!("the public address of {allocation_id}"),
    )?;
    let private_ip = text(item, "privateIpAddress")
        .map(|ip| ipv4(&ip, &format!("the private address of {allocation_id}")))
        .transpose()?;
    let mut tags = BTreeMap::new();
    if let Some(set) = child(item, "tagSet") {
        for tag in children(set, "item") {
            let key = required(tag, "key", "tagSet/item")?;
            // A tag may have an empty value.
            tags.insert(key, text(tag, "value").unwrap_or_default());
        }
    }
    Ok(Address {
        public_ip,
        association_id: text(item, "associationId"),
        instance_id: text(item, "instanceId"),
        network_interface_id: text(item, "networkInterfaceId"),
        private_ip,
        tags,
        allocation_id,
    })
}

/// AllocateAddress's answer.
pub(crate) fn allocated(body: &str) -> Result<AllocatedAddress, String> {
    let document = parse(body)?;
    let root = root(&document, "AllocateAddressResponse")?;
    let within = "AllocateAddressResponse";
    let allocation_id = required(root, "allocationId", within)?;
    let public_ip = ipv4(
        &required(root, "publicIp", within)?,
        "the allocated public address",
    )?;
    Ok(AllocatedAddress {
        allocation_id,
        public_ip,
    })
}

/// AssociateAddress's association id.
pub(crate) fn association_id(body: &str) -> Result<String, String> {
    let document = parse(body)?;
    let root = root(&document, "AssociateAddressResponse")?;
    check_return(root)?;
    required(root, "associationId", "AssociateAddressResponse")
}

/// An answer that only confirms (DisassociateAddress, ReleaseAddress): the root is `expected`
/// and `<return>`, if present, is `true`.
pub(crate) fn confirmation(body: &str, expected: &str) -> Result<(), String> {
    let document = parse(body)?;
    check_return(root(&document, expected)?)
}

/// EC2 answers `<return>true</return>`; moto leaves it out.
fn check_return(root: Node<'_, '_>) -> Result<(), String> {
    match text(root, "return").as_deref() {
        None | Some("true") => Ok(()),
        Some(other) => Err(format!("<return> is {other:?}, not true")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the examples of the EC2 API Reference (namespace, requestId, return).
    const DESCRIBE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
   <requestId>f7de5e98-491a-4c19-a92d-908d6EXAMPLE</requestId>
   <addressesSet>
      <item>
         <publicIp>203.0.113.41</publicIp>
         <allocationId>eipalloc-08229861</allocationId>
         <domain>vpc</domain>
         <instanceId>i-0598c7d356eba48d7</instanceId>
         <associationId>eipassoc-f0229899</associationId>
         <networkInterfaceId>eni-ef229886</networkInterfaceId>
         <networkInterfaceOwnerId>053230519467</networkInterfaceOwnerId>
         <privateIpAddress>10.0.0.228</privateIpAddress>
         <tagSet>
            <item><key>palisade:bastion</key><value>bastion-1</value></item>
            <item><key>empty</key><value/></item>
         </tagSet>
         <publicIpv4Pool>amazon</publicIpv4Pool>
         <networkBorderGroup>us-east-1</networkBorderGroup>
      </item>
      <item>
         <publicIp>198.51.100.2</publicIp>
         <allocationId>eipalloc-0a1b2c3d</allocationId>
         <domain>vpc</domain>
         <publicIpv4Pool>amazon</publicIpv4Pool>
      </item>
   </addressesSet>
</DescribeAddressesResponse>"#;

    // moto 5's shape: no namespace slash, empty elements for what is not set.
    const DESCRIBE_MOTO: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><addressesSet><item><allocationId>eipalloc-a85244a7f265897a1</allocationId><domain>vpc</domain><networkInterfaceId/><tagSet><item><key>palisade:bastion</key><value>b1</value></item></tagSet><instanceId/><publicIp>127.46.217.253</publicIp></item></addressesSet><requestId>request-id</requestId></DescribeAddressesResponse>"#;

    #[test]
    fn describe_addresses_reads_associated_and_free_addresses() {
        let described = addresses(DESCRIBE).unwrap();
        assert_eq!(described.len(), 2);
        let associated = &described[0];
        assert_eq!(
            associated,
            &Address {
                allocation_id: "eipalloc-08229861".to_string(),
                public_ip: Ipv4Addr::new(203, 0, 113, 41),
                association_id: Some("eipassoc-f0229899".to_string()),
                instance_id: Some("i-0598c7d356eba48d7".to_string()),
                network_interface_id: Some("eni-ef229886".to_string()),
                private_ip: Some(Ipv4Addr::new(10, 0, 0, 228)),
                tags: [
                    ("palisade:bastion".to_string(), "bastion-1".to_string()),
                    ("empty".to_string(), String::new()),
                ]
                .into_iter()
                .collect(),
            }
        );
        let free = &described[1];
        assert_eq!(free.allocation_id, "eipalloc-0a1b2c3d");
        assert_eq!(
            (&free.association_id, &free.instance_id, &free.private_ip),
            (&None, &None, &None)
        );
        assert!(free.tags.is_empty());
        assert_eq!(
            request_id(DESCRIBE).as_deref(),
            Some("f7de5e98-491a-4c19-a92d-908d6EXAMPLE")
        );

        let moto = addresses(DESCRIBE_MOTO).unwrap();
        assert_eq!(moto.len(), 1);
        assert_eq!(
            (&moto[0].instance_id, &moto[0].network_interface_id),
            (&None, &None),
            "empty elements are absent values"
        );
        assert_eq!(moto[0].tags["palisade:bastion"], "b1");

        let none = r#"<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><addressesSet/></DescribeAddressesResponse>"#;
        assert_eq!(addresses(none).unwrap(), vec![]);
    }

    #[test]
    fn describe_addresses_refuses_what_the_calls_cannot_do_without() {
        for (body, says) in [
            ("", "not XML"),
            (
                "<html><body>502 Bad Gateway</body></html>",
                "root element is <html>",
            ),
            ("<DescribeAddressesResponse><addressesSet><item>", "not XML"),
            (
                "<DescribeAddressesResponse><requestId>x</requestId></DescribeAddressesResponse>",
                "no <addressesSet>",
            ),
            (
                "<DescribeAddressesResponse><addressesSet><item><publicIp>203.0.113.1</publicIp></item></addressesSet></DescribeAddressesResponse>",
                "no <allocationId>",
            ),
            (
                "<DescribeAddressesResponse><addressesSet><item><allocationId>eipalloc-1</allocationId><publicIp>2001:db8::1</publicIp></item></addressesSet></DescribeAddressesResponse>",
                "not an IPv4 address",
            ),
            (
                "<DescribeAddressesResponse><addressesSet><item><allocationId>eipalloc-1</allocationId><publicIp>203.0.113.1</publicIp><tagSet><item><value>v</value></item></tagSet></item></addressesSet></DescribeAddressesResponse>",
                "no <key>",
            ),
            (
                r#"<!DOCTYPE lolz [<!ENTITY lol "lol">]><DescribeAddressesResponse><addressesSet/></DescribeAddressesResponse>"#,
                "not XML",
            ),
        ] {
            let error = addresses(body).unwrap_err();
            assert!(error.contains(says), "{body:?}: {error}");
        }
    }

    #[test]
    fn allocate_associate_and_confirmations() {
        let allocate = r#"<AllocateAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
   <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
   <publicIp>198.51.100.1</publicIp>
   <domain>vpc</domain>
   <allocationId>eipalloc-5723d13e</allocationId>
   <publicIpv4Pool>amazon</publicIpv4Pool>
   <networkBorderGroup>us-east-1</networkBorderGroup>
</AllocateAddressResponse>"#;
        assert_eq!(
            allocated(allocate).unwrap(),
            AllocatedAddress {
                allocation_id: "eipalloc-5723d13e".to_string(),
                public_ip: Ipv4Addr::new(198, 51, 100, 1),
            }
        );
        assert!(
            allocated("<AllocateAddressResponse><publicIp>198.51.100.1</publicIp></AllocateAddressResponse>")
                .unwrap_err()
                .contains("no <allocationId>")
        );

        let associate = r#"<AssociateAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
   <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
   <return>true</return>
   <associationId>eipassoc-fc5ca095</associationId>
</AssociateAddressResponse>"#;
        assert_eq!(association_id(associate).unwrap(), "eipassoc-fc5ca095");
        let refused = associate.replace("<return>true", "<return>false");
        assert!(association_id(&refused).unwrap_err().contains("\"false\""));
        assert!(
            association_id("<AllocateAddressResponse/>")
                .unwrap_err()
                .contains("not <AssociateAddressResponse>")
        );

        let release = r#"<ReleaseAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
   <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
   <return>true</return>
</ReleaseAddressResponse>"#;
        confirmation(release, "ReleaseAddressResponse").unwrap();
        confirmation(
            r#"<ReleaseAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>request-id</requestId></ReleaseAddressResponse>"#,
            "ReleaseAddressResponse",
        )
        .unwrap();
        assert!(confirmation(release, "DisassociateAddressResponse").is_err());
        assert!(
            confirmation(
                &release.replace("<return>true", "<return>false"),
                "ReleaseAddressResponse"
            )
            .is_err()
        );
    }

    #[test]
    fn error_answers_in_ec2_and_query_shapes() {
        let ec2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidAllocationID.NotFound</Code><Message>The allocation ID 'eipalloc-1234' does not exist</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#;
        assert_eq!(
            error_answer(ec2),
            Some(ErrorAnswer {
                code: "InvalidAllocationID.NotFound".to_string(),
                message: "The allocation ID 'eipalloc-1234' does not exist".to_string(),
                request_id: Some("ea966190-f9aa-478e-9ede-example".to_string()),
            })
        );
        let query = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error><RequestId>4b7e-example</RequestId></ErrorResponse>"#;
        let answer = error_answer(query).unwrap();
        assert_eq!(answer.code, "SignatureDoesNotMatch");
        assert_eq!(answer.request_id.as_deref(), Some("4b7e-example"));
        let no_message =
            "<Response><Errors><Error><Code>Unavailable</Code></Error></Errors></Response>";
        assert_eq!(
            error_answer(no_message).map(|a| (a.code, a.message, a.request_id)),
            Some(("Unavailable".to_string(), String::new(), None))
        );
        for not_an_error in [
            "",
            "Service Unavailable",
            "<Response><Errors/></Response>",
            "<Response><Errors><Error><Message>m</Message></Error></Errors></Response>",
            DESCRIBE,
        ] {
            assert_eq!(error_answer(not_an_error), None, "{not_an_error:?}");
        }
    }
}
