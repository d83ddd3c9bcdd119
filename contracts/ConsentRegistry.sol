// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IConsentRegistry} from "./IConsentRegistry.sol";

/**
 * @title Vellum consent registry
 * @notice See {IConsentRegistry} and `docs/consent.md`.
 *
 * Storage: a consent is its patient (one slot), a packed header (status, lock, rule count) and
 * a fixed array of up to 9 rules, each two slots (the class mask; everything else packed) plus
 * its actors. Rules beyond the rule count are stale and never read. A patient's consent ids
 * are kept in the order first written, so {decide} needs no sorting; the patient's wallet,
 * nonce and consent counts share one slot.
 */
contract ConsentRegistry is IConsentRegistry, AccessControl, EIP712 {
    /// @inheritdoc IConsentRegistry
    bytes32 public constant CUSTODIAN_ROLE = keccak256("CUSTODIAN_ROLE");
    /// @inheritdoc IConsentRegistry
    bytes32 public constant APPROVER_ROLE = keccak256("APPROVER_ROLE");

    /// @notice A base rule and at most 8 exceptions.
    uint256 public constant MAX_RULES = 9;
    /// @notice Actors one rule may name.
    uint256 public constant MAX_RULE_ACTORS = 8;
    /// @notice Consents one patient may have in force at once.
    uint256 public constant MAX_ACTIVE_CONSENTS = 64;
    /// @notice Identities one request may present to {decide}.
    uint256 public constant MAX_REQUEST_ACTORS = 4;
    /// @notice The purpose index of ETREAT (emergency treatment).
    uint8 public constant ETREAT = 1;

    bytes32 public constant REVOKE_TYPEHASH = keccak256("Revoke(bytes32 consentId,uint256 nonce,uint256 deadline)");
    bytes32 public constant RULE_TYPEHASH =
        keccak256("Rule(bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end)");
    bytes32 public constant GRANT_TYPEHASH =
        keccak256(
            "Grant(bytes32 consentId,bytes32 patient,Rule[] rules,uint256 nonce,uint256 deadline)"
            "Rule(bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end)"
        );

    uint64 private constant ETREAT_BIT = uint64(1) << ETREAT;

    struct StoredRule {
        uint256 classes;
        bool permit;
        uint16 actions;
        uint64 purposes;
        uint64 start;
        uint64 end;
        bytes32[] actors;
    }

    struct StoredConsent {
        bytes32 patient;
        Status status;
        bool lockedByPatient;
        uint8 ruleCount;
        StoredRule[MAX_RULES] rules;
    }

    /// Everything kept per patient, in one slot.
    struct PatientState {
        address wallet;
        /// consents ever written (the length of the patient's id list)
        uint32 count;
        /// consents in force
        uint32 active;
        /// the next signature's nonce
        uint32 nonce;
    }

    struct Approval {
        bool approved;
        bool emergency;
    }

    /// A request to {decide}, with the per-value bits precomputed.
    struct Request {
        uint256 classBit;
        uint256 actionBit;
        uint256 purposeBit;
        uint64 time;
        /// bit j set when request actor j is approved
        uint256 approvedMask;
        /// purpose ETREAT and some request actor approved with the emergency flag
        bool breakGlass;
    }

    /// A rule after inheritance from the base (actors aside).
    struct Effective {
        bool permit;
        uint256 classes;
        uint16 actions;
        uint64 purposes;
        uint64 start;
        uint64 end;
    }

    mapping(bytes32 id => StoredConsent) private _consents;
    mapping(bytes32 patient => PatientState) private _patients;
    /// A patient's consent ids in the order first written: index → id.
    mapping(bytes32 patient => mapping(uint256 index => bytes32 id)) private _consentAt;
    mapping(bytes32 actor => Approval) private _approvals;

    /**
     * @notice Deploys the registry with `admin` as its administrator and, unless it is the zero
     * address, `custodian` holding both {CUSTODIAN_ROLE} and {APPROVER_ROLE}.
     *
     * Requirements:
     *
     * - `admin` must not be the zero address ({ConsentRegistryZeroAdmin}).
     */
    constructor(address admin, address custodian) EIP712("VellumConsentRegistry", "1") {
        if (admin == address(0)) revert ConsentRegistryZeroAdmin();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (custodian != address(0)) {
            _grantRole(CUSTODIAN_ROLE, custodian);
            _grantRole(APPROVER_ROLE, custodian);
        }
    }

    // ---------------------------------------------------------------- actors and wallets

    /// @inheritdoc IConsentRegistry
    function approveActor(bytes32 actor, bool emergency) external onlyRole(APPROVER_ROLE) {
        if (actor == bytes32(0)) revert ConsentZeroKey();
        _approvals[actor] = Approval(true, emergency);
        emit ActorApproved(actor, emergency);
    }

    /// @inheritdoc IConsentRegistry
    function revokeApproval(bytes32 actor) external onlyRole(APPROVER_ROLE) {
        delete _approvals[actor];
        emit ActorApprovalRevoked(actor);
    }

    /// @inheritdoc IConsentRegistry
    function approvalOf(bytes32 actor) external view returns (bool approved, bool emergency) {
        Approval storage a = _approvals[actor];
        return (a.approved, a.emergency);
    }

    /// @inheritdoc IConsentRegistry
    function registerWallet(bytes32 patient, address wallet) external onlyRole(CUSTODIAN_ROLE) {
        if (patient == bytes32(0)) revert ConsentZeroKey();
        _patients[patient].wallet = wallet;
        emit WalletRegistered(patient, wallet);
    }

    /// @inheritdoc IConsentRegistry
    function walletOf(bytes32 patient) external view returns (address) {
        return _patients[patient].wallet;
    }

    /// @inheritdoc IConsentRegistry
    function nonces(bytes32 patient) external view returns (uint256) {
        return _patients[patient].nonce;
    }

    // ---------------------------------------------------------------- consents

    /// @inheritdoc IConsentRegistry
    function putConsent(bytes32 id, bytes32 patient, Rule[] calldata rules) external onlyRole(CUSTODIAN_ROLE) {
        _put(id, patient, rules, false);
    }

    /// @inheritdoc IConsentRegistry
    function revokeConsent(bytes32 id) external onlyRole(CUSTODIAN_ROLE) {
        StoredConsent storage c = _consents[id];
        Status status = c.status;
        if (status == Status.None) revert ConsentUnknown(id);
        if (status == Status.Revoked) return;
        _deactivate(c);
        emit ConsentRevoked(id, c.patient, false);
    }

    /// @inheritdoc IConsentRegistry
    function revokeBySig(bytes32 id, uint256 nonce, uint256 deadline, bytes calldata signature) external {
        if (block.timestamp > deadline) revert ConsentSignatureExpired(deadline);
        StoredConsent storage c = _consents[id];
        if (c.status == Status.None) revert ConsentUnknown(id);
        bytes32 patient = c.patient;
        _useSignature(patient, nonce, keccak256(abi.encode(REVOKE_TYPEHASH, id, nonce, deadline)), signature);
        if (c.status == Status.Active) _deactivate(c);
        c.lockedByPatient = true;
        emit ConsentRevoked(id, patient, true);
    }

    /// @inheritdoc IConsentRegistry
    function grantBySig(
        bytes32 id,
        bytes32 patient,
        Rule[] calldata rules,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert ConsentSignatureExpired(deadline);
        bytes32 structHash = keccak256(abi.encode(GRANT_TYPEHASH, id, patient, _hashRules(rules), nonce, deadline));
        _useSignature(patient, nonce, structHash, signature);
        _put(id, patient, rules, true);
    }

    /// @inheritdoc IConsentRegistry
    function recordEmergencyAccess(
        bytes32 patient,
        bytes32 actor,
        uint8 resourceClass,
        uint8 purpose
    ) external onlyRole(CUSTODIAN_ROLE) {
        emit EmergencyAccess(patient, actor, resourceClass, purpose);
    }

    /// @inheritdoc IConsentRegistry
    function consentOf(
        bytes32 id
    ) external view returns (bytes32 patient, Status status, bool lockedByPatient, Rule[] memory rules) {
        StoredConsent storage c = _consents[id];
        uint256 n = c.ruleCount;
        rules = new Rule[](n);
        for (uint256 i = 0; i < n; i++) {
            StoredRule storage r = c.rules[i];
            rules[i] = Rule(r.permit, r.actors, r.classes, r.actions, r.purposes, r.start, r.end);
        }
        return (c.patient, c.status, c.lockedByPatient, rules);
    }

    /// @inheritdoc IConsentRegistry
    function consentsOf(bytes32 patient) external view returns (bytes32[] memory ids) {
        mapping(uint256 => bytes32) storage at = _consentAt[patient];
        uint256 count = _patients[patient].count;
        ids = new bytes32[](count);
        for (uint256 k = 0; k < count; k++) ids[k] = at[k];
    }

    // ---------------------------------------------------------------- decision

    /// @inheritdoc IConsentRegistry
    function decide(
        bytes32 patient,
        bytes32[] calldata actors,
        uint8 resourceClass,
        uint8 action,
        uint8 purpose,
        uint64 time
    ) public view returns (Decision decision, bytes32 consentId) {
        uint256 actorCount = actors.length;
        if (actorCount > MAX_REQUEST_ACTORS) revert ConsentTooManyRequestActors(actorCount, MAX_REQUEST_ACTORS);
        Request memory request = Request({
            classBit: uint256(1) << resourceClass,
            actionBit: uint256(1) << action,
            purposeBit: uint256(1) << purpose,
            time: time,
            approvedMask: 0,
            breakGlass: false
        });
        bool emergency;
        for (uint256 j = 0; j < actorCount; j++) {
            Approval storage a = _approvals[actors[j]];
            if (a.approved) {
                request.approvedMask |= uint256(1) << j;
                if (a.emergency) emergency = true;
            }
        }
        request.breakGlass = purpose == ETREAT && emergency;
        return _combine(_consentAt[patient], _patients[patient].count, actors, request);
    }

    /// @inheritdoc IConsentRegistry
    function isPermitted(
        bytes32 patient,
        bytes32[] calldata actors,
        uint8 resourceClass,
        uint8 action,
        uint8 purpose,
        uint64 time
    ) external view returns (bool) {
        (Decision decision, ) = decide(patient, actors, resourceClass, action, purpose, time);
        return decision == Decision.Permit || decision == Decision.BreakGlass;
    }

    /// @notice ERC-165: also answers for {IConsentRegistry}.
    function supportsInterface(bytes4 interfaceId) public view virtual override returns (bool) {
        return interfaceId == type(IConsentRegistry).interfaceId || super.supportsInterface(interfaceId);
    }

    // ---------------------------------------------------------------- internals

    /// Steps 1 to 5 of {decide} over the consents `ids`, in order.
    function _combine(
        mapping(uint256 => bytes32) storage ids,
        uint256 count,
        bytes32[] calldata actors,
        Request memory request
    ) private view returns (Decision, bytes32) {
        bytes32 permitting;
        for (uint256 k = 0; k < count; k++) {
            bytes32 id = ids[k];
            StoredConsent storage c = _consents[id];
            if (c.status != Status.Active) continue;
            (bool found, bool permit, uint64 purposes) = _verdict(c, actors, request);
            if (!found) continue;
            if (!permit) {
                // Break-glass overrides a deny unless the deny names ETREAT explicitly.
                if (!request.breakGlass || (purposes & ETREAT_BIT) != 0) return (Decision.Deny, id);
            } else if (permitting == bytes32(0)) {
                permitting = id;
            }
        }
        if (permitting != bytes32(0)) return (Decision.Permit, permitting);
        if (request.breakGlass) return (Decision.BreakGlass, bytes32(0));
        if (request.approvedMask == 0) return (Decision.ActorNotApproved, bytes32(0));
        return (Decision.NoConsent, bytes32(0));
    }

    /**
     * The verdict of consent `c`: whether a rule matched, whether it permits, and its
     * (inherited) purposes mask. The last matching exception wins, else the base.
     */
    function _verdict(
        StoredConsent storage c,
        bytes32[] calldata actors,
        Request memory request
    ) private view returns (bool found, bool permit, uint64 purposes) {
        StoredRule storage base = c.rules[0];
        Effective memory b = Effective(base.permit, base.classes, base.actions, base.purposes, base.start, base.end);
        for (uint256 i = c.ruleCount; i > 1; ) {
            i--;
            StoredRule storage r = c.rules[i];
            Effective memory e = Effective({
                permit: r.permit,
                classes: r.classes != 0 ? r.classes : b.classes,
                actions: r.actions != 0 ? r.actions : b.actions,
                purposes: r.purposes != 0 ? r.purposes : b.purposes,
                start: r.start != 0 ? r.start : b.start,
                end: r.end != 0 ? r.end : b.end
            });
            bytes32[] storage ruleActors = r.actors.length != 0 ? r.actors : base.actors;
            if (_matches(e, ruleActors, actors, request)) return (true, e.permit, e.purposes);
        }
        if (_matches(b, base.actors, actors, request)) return (true, b.permit, b.purposes);
        return (false, false, 0);
    }

    function _matches(
        Effective memory e,
        bytes32[] storage ruleActors,
        bytes32[] calldata actors,
        Request memory request
    ) private view returns (bool) {
        if (e.start != 0 && request.time < e.start) return false;
        if (e.end != 0 && request.time > e.end) return false;
        if (e.classes != 0 && e.classes & request.classBit == 0) return false;
        if (e.actions != 0 && uint256(e.actions) & request.actionBit == 0) return false;
        if (e.purposes != 0 && uint256(e.purposes) & request.purposeBit == 0) return false;
        // A permit needs an approved request actor; a deny applies to any request actor.
        uint256 eligible = e.permit ? request.approvedMask : type(uint256).max;
        uint256 n = ruleActors.length;
        if (n == 0) return !e.permit || eligible != 0;
        for (uint256 j = 0; j < actors.length; j++) {
            if (eligible & (uint256(1) << j) == 0) continue;
            bytes32 actor = actors[j];
            for (uint256 i = 0; i < n; i++) if (ruleActors[i] == actor) return true;
        }
        return false;
    }

    function _put(bytes32 id, bytes32 patient, Rule[] calldata rules, bool bySignature) private {
        if (id == bytes32(0) || patient == bytes32(0)) revert ConsentZeroKey();
        uint256 n = rules.length;
        if (n == 0) revert ConsentNoRules();
        if (n > MAX_RULES) revert ConsentTooManyRules(n, MAX_RULES);

        StoredConsent storage c = _consents[id];
        PatientState storage p = _patients[patient];
        Status status = c.status;
        if (status == Status.None) {
            c.patient = patient;
            uint32 count = p.count;
            _consentAt[patient][count] = id;
            p.count = count + 1;
        } else if (c.patient != patient) {
            revert ConsentPatientMismatch(id);
        }
        if (!bySignature && c.lockedByPatient) revert ConsentLockedByPatient(id);
        if (status != Status.Active) {
            uint32 active = p.active;
            if (active >= MAX_ACTIVE_CONSENTS) revert ConsentTooManyConsents(patient, MAX_ACTIVE_CONSENTS);
            p.active = active + 1;
        }

        for (uint256 i = 0; i < n; i++) {
            Rule calldata rule = rules[i];
            uint256 actorCount = rule.actors.length;
            if (actorCount > MAX_RULE_ACTORS) revert ConsentTooManyActors(i, actorCount, MAX_RULE_ACTORS);
            if (rule.permit) {
                // An exception without actors of its own permits the base's.
                bytes32[] calldata named = (i > 0 && actorCount == 0) ? rules[0].actors : rule.actors;
                for (uint256 j = 0; j < named.length; j++) {
                    if (!_approvals[named[j]].approved) revert ConsentActorNotApproved(named[j]);
                }
            }
            StoredRule storage r = c.rules[i];
            r.classes = rule.classes;
            r.permit = rule.permit;
            r.actions = rule.actions;
            r.purposes = rule.purposes;
            r.start = rule.start;
            r.end = rule.end;
            if (actorCount != 0 || r.actors.length != 0) r.actors = rule.actors;
        }
        c.status = Status.Active;
        c.ruleCount = uint8(n);
        if (bySignature) c.lockedByPatient = false;
        emit ConsentPut(id, patient, bySignature);
    }

    function _deactivate(StoredConsent storage c) private {
        c.status = Status.Revoked;
        _patients[c.patient].active--;
    }

    /// Checks `patient`'s signature over `structHash` with `nonce`, then uses the nonce up.
    function _useSignature(bytes32 patient, uint256 nonce, bytes32 structHash, bytes calldata signature) private {
        PatientState storage p = _patients[patient];
        uint32 expected = p.nonce;
        if (nonce != expected) revert ConsentBadNonce(expected, nonce);
        address wallet = p.wallet;
        if (wallet == address(0)) revert ConsentNoWallet(patient);
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), signature);
        if (err != ECDSA.RecoverError.NoError || signer != wallet) revert ConsentBadSignature();
        p.nonce = expected + 1;
    }

    /// EIP-712 `hashStruct` of `Rule[]`: keccak256 of the concatenated rule hashes.
    function _hashRules(Rule[] calldata rules) private pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](rules.length);
        for (uint256 i = 0; i < rules.length; i++) {
            Rule calldata r = rules[i];
            hashes[i] = keccak256(
                abi.encode(
                    RULE_TYPEHASH,
                    r.permit,
                    keccak256(abi.encodePacked(r.actors)),
                    r.classes,
                    r.actions,
                    r.purposes,
                    r.start,
                    r.end
                )
            );
        }
        return keccak256(abi.encodePacked(hashes));
    }
}
